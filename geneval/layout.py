"""The GenEval output layout: where generated images and prompt metadata live on disk.

    OUTDIR/00000/metadata.jsonl        one JSON object: line 0 of evaluation_metadata.jsonl
    OUTDIR/00000/samples/0000.png      image 0 of prompt 0
    OUTDIR/00000/samples/0001.png      ...

This is the layout of djghosh13/geneval (README; generation/diffusers_generate.py writes it and
evaluation/evaluate_images.py reads it). Writers here are atomic (temporary file in the same
folder, fsync, ``os.replace``), so a killed run never leaves a half-written PNG under a final
name: a sample is done iff its final PNG exists. The generation runner and the evaluator
(``geneval.evaluate``) both use this module.
"""
from __future__ import annotations

import io
import json
import os
import re
import secrets
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

METADATA_FILE = "metadata.jsonl"
SAMPLES_DIR = "samples"
# evaluate_images.py keeps image names with `re.match(r"\d+\.png", name)`: anchored at the
# start only, so "0000.png.bak" is read too. We keep that quirk so we score the same files.
IMAGE_NAME = re.compile(r"\d+\.png")
TMP_SUFFIX = ".tmp"


def prompt_dir(outdir, index: int) -> Path:
    """``outdir/%05d``: the folder of prompt ``index``."""
    return Path(outdir) / f"{index:05d}"


def sample_path(outdir, index: int, sample: int) -> Path:
    """``outdir/%05d/samples/%04d.png``: image ``sample`` of prompt ``index``."""
    return prompt_dir(outdir, index) / SAMPLES_DIR / f"{sample:04d}.png"


# ----------------------------------------------------------------------------
# Atomic writers

def _tmp_path(path: Path) -> Path:
    # A leading dot keeps temporaries out of IMAGE_NAME matches and out of `ls`.
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; directories cannot be opened this way on Windows.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    # os.open with 0o666 honours the umask, unlike tempfile.mkstemp's private 0o600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path, text: str) -> None:
    """``atomic_write_bytes`` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_png(path, image) -> None:
    """Atomically write a ``uint8 [H, W, 3]`` RGB array or a PIL image as PNG."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"write_png expects a uint8 [H, W, 3] RGB array, got {image.dtype} {list(image.shape)}; "
                             "convert with (x * 255).round().clip(0, 255).astype(np.uint8)")
        image = Image.fromarray(image, mode="RGB")
    elif not isinstance(image, Image.Image):
        raise ValueError(f"write_png expects a numpy array or a PIL image, got {type(image).__name__}")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


# ----------------------------------------------------------------------------
# Writing the layout

def write_metadata(outdir, index: int, metadata: dict) -> Path:
    """Write prompt ``index``'s metadata record as one JSON object (read back with ``json.load``)."""
    path = prompt_dir(outdir, index) / METADATA_FILE
    atomic_write_text(path, json.dumps(metadata) + "\n")
    return path


def write_sample(outdir, index: int, sample: int, image) -> Path:
    """Atomically write image ``sample`` of prompt ``index``; returns its path."""
    path = sample_path(outdir, index, sample)
    write_png(path, image)
    return path


def _remove_tmp_leftovers(path: Path) -> None:
    if path.parent.is_dir():
        for leftover in path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)


def sample_done(outdir, index: int, sample: int) -> bool:
    """True iff the final PNG of the sample exists.

    Temporaries left by a killed writer are ignored and deleted. Call it only for samples this
    process owns (each rank owns its samples), never while another process writes the sample.
    """
    path = sample_path(outdir, index, sample)
    _remove_tmp_leftovers(path)
    return path.is_file()


# ----------------------------------------------------------------------------
# Reading the layout

@dataclass
class PromptFolder:
    """One ``OUTDIR/<digits>`` folder as the evaluator sees it."""

    name: str
    """Folder name, e.g. ``"00012"`` (4- and 5-digit names both occur upstream)."""
    path: Path
    index: int
    metadata: dict | None
    """The prompt's metadata record; None when ``error`` is set."""
    images: list[str] = field(default_factory=list)
    """Image file names in ``samples/`` matching upstream's pattern, sorted by number then name."""
    error: str | None = None
    """Why this folder cannot be scored (missing or malformed metadata, no samples folder)."""

    def image_path(self, name: str) -> Path:
        return self.path / SAMPLES_DIR / name


def image_sort_key(name: str) -> tuple[int, str]:
    """Sort images by their leading number, then name ("2.png" before "10.png")."""
    return int(IMAGE_NAME.match(name).group()[:-len(".png")]), name


def list_images(samples: Path) -> list[str]:
    """Names of the files in ``samples`` that evaluate_images.py would score, in a fixed order."""
    names = [entry.name for entry in os.scandir(samples) if entry.is_file() and IMAGE_NAME.match(entry.name)]
    return sorted(names, key=image_sort_key)


def read_metadata(folder: Path) -> dict:
    """The metadata record of a prompt folder, read with ``json.load`` as upstream (indented JSON works).

    Raises ValueError naming the folder when the file is missing, is not one JSON object, or
    lacks the ``tag``/``prompt`` fields the scorer needs.
    """
    path = folder / METADATA_FILE
    if not path.is_file():
        raise ValueError(f"{folder}: no {METADATA_FILE}; every prompt folder needs its metadata record "
                         "(one line of evaluation_metadata.jsonl)")
    try:
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not one JSON object ({err}); write exactly one metadata record per folder") from err
    if not isinstance(metadata, dict) or "tag" not in metadata or "prompt" not in metadata:
        raise ValueError(f"{path}: expected a GenEval metadata object with 'tag' and 'prompt', "
                         f"got {type(metadata).__name__}")
    return metadata


def _read_folder(path: Path) -> PromptFolder:
    folder = PromptFolder(name=path.name, path=path, index=int(path.name), metadata=None)
    samples = path / SAMPLES_DIR
    try:
        metadata = read_metadata(path)
    except ValueError as err:
        folder.error = str(err)
        return folder
    if not samples.is_dir():
        folder.error = f"{path}: no {SAMPLES_DIR}/ folder; images must be {SAMPLES_DIR}/<digits>.png"
        return folder
    folder.metadata, folder.images = metadata, list_images(samples)
    return folder


def scan_outdir(outdir) -> list[PromptFolder]:
    """The prompt folders of ``outdir`` (names of ASCII digits), sorted by number then name.

    Folders with other names are skipped, as upstream does, with a warning naming them;
    hidden folders (e.g. ``.geneval_cache``) are skipped silently. A folder whose metadata is
    missing or malformed, or which has no ``samples/``, is returned with ``error`` set and no
    images instead of raising (upstream crashes), so one bad folder does not lose the others.
    """
    outdir = Path(outdir)
    if not outdir.is_dir():
        raise ValueError(f"{outdir} is not a directory; pass the folder holding the <digits>/ prompt folders")
    folders, skipped = [], []
    for entry in os.scandir(outdir):
        if not entry.is_dir():
            continue
        if entry.name.isascii() and entry.name.isdigit():
            folders.append(Path(entry.path))
        elif not entry.name.startswith("."):
            skipped.append(entry.name)
    if skipped:
        warnings.warn(f"{outdir}: skipping folders whose names are not all digits: {sorted(skipped)}", stacklevel=2)
    folders.sort(key=lambda p: (int(p.name), p.name))
    return [_read_folder(path) for path in folders]
