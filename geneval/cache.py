"""Per-image cache of raw detections (and CLIP colours), so re-scoring never re-runs a detector.

GenEval's decision (``geneval.rules``) is a cheap function of the raw detections plus the
colours of the few objects colour clauses inspect. The evaluator stores both here, one JSON
file per image:

    OUTDIR/.geneval_cache/<backend>-<hash>/key.json                 what the hash covers
    OUTDIR/.geneval_cache/<backend>-<hash>/<folder>/<image>.json    one image's entry

The directory hash covers everything that changes detections: backend, weights path (``auto``
resolved to the folder it means now) and a fingerprint of local weight files, and the ``hf``
preprocessing (``detector_key``). Each entry stores the SHA-1 of the image
bytes it was computed from; an entry whose image changed is a miss. Colours live inside the
entry under a key of their own settings (CLIP path, ``bgcolor``, ``crop``: ``color_key``).
Re-running with another threshold, ``position_threshold`` or ``max_objects`` therefore reuses
everything. Entries are written atomically, so a killed run leaves only whole entries.
"""
from __future__ import annotations

import base64
import hashlib
import json
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geneval.config import GenEvalConfig
from geneval.detection import Detection
from geneval.layout import atomic_write_text

CACHE_VERSION = 1
"""Bump when the entry format or a backend's output changes, to invalidate old caches."""
DEFAULT_CACHE_DIR = ".geneval_cache"
KEY_FILE = "key.json"
# Backends that load no weights: their detections do not depend on detector_path.
WEIGHTLESS_BACKENDS = {"shapes"}


# ----------------------------------------------------------------------------
# Cache keys

def _weights_fingerprint(path: str) -> list | None:
    """(name, size, mtime_ns) of the files at a local weights path; None for a hub id."""
    local = Path(path).expanduser()
    if local.is_file():
        stat = local.stat()
        return [[local.name, stat.st_size, stat.st_mtime_ns]]
    if local.is_dir():
        return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(local.iterdir()) if p.is_file()]
    return None


def _weights_key(path: str) -> dict:
    local = Path(path).expanduser()
    return {"path": str(local.resolve()) if local.exists() else path, "files": _weights_fingerprint(path)}


def detector_key(cfg: GenEvalConfig) -> dict:
    """Everything that determines a backend's raw detections for a given image."""
    key = {"version": CACHE_VERSION, "detector": cfg.detector}
    if cfg.detector not in WEIGHTLESS_BACKENDS:
        key["weights"] = _weights_key(resolved_detector_path(cfg))
    if cfg.detector == "hf":
        key["preprocess"] = cfg.preprocess
    return key


def resolved_detector_path(cfg: GenEvalConfig) -> str:
    """``detector_path`` with ``auto`` resolved, so a cache never outlives a change of the weights it names."""
    from geneval.detectors.hf import DEFAULT_DETECTOR
    from geneval.detectors.mmdet_convert import resolve_detector_path

    return resolve_detector_path(cfg.detector_path, DEFAULT_DETECTOR)


def color_key(cfg: GenEvalConfig) -> str:
    """Short hash of the settings that determine a CLIP colour prediction for one object."""
    settings = {"clip": _weights_key(cfg.clip_path), "bgcolor": cfg.bgcolor, "crop": bool(cfg.crop)}
    return _short_hash(settings)


def _short_hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def file_digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


# ----------------------------------------------------------------------------
# Masks: cropped to their nonzero rows/columns, bit-packed, zlib-compressed, base64

def encode_mask(mask: np.ndarray) -> dict:
    """Lossless compact form of a boolean ``[H, W]`` mask."""
    mask = np.asarray(mask, dtype=bool)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return {"shape": list(mask.shape), "offset": [0, 0], "size": [0, 0], "bits": ""}
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    packed = np.packbits(mask[y0:y1, x0:x1].ravel())
    return {"shape": list(mask.shape), "offset": [int(y0), int(x0)], "size": [int(y1 - y0), int(x1 - x0)],
            "bits": base64.b64encode(zlib.compress(packed.tobytes())).decode("ascii")}


def decode_mask(encoded: dict) -> np.ndarray:
    mask = np.zeros(encoded["shape"], dtype=bool)
    height, width = encoded["size"]
    if height and width:
        packed = np.frombuffer(zlib.decompress(base64.b64decode(encoded["bits"])), dtype=np.uint8)
        y0, x0 = encoded["offset"]
        mask[y0:y0 + height, x0:x0 + width] = np.unpackbits(packed, count=height * width).reshape(height, width)
    return mask


def detection_to_json(det: Detection) -> dict:
    return {"label": det.label, "box": [float(v) for v in det.box], "score": float(det.score),
            "color": det.color, "mask": None if det.mask is None else encode_mask(det.mask)}


def detection_from_json(obj: dict) -> Detection:
    return Detection(label=obj["label"], box=tuple(obj["box"]), score=obj["score"], color=obj["color"],
                     mask=None if obj["mask"] is None else decode_mask(obj["mask"]))


# ----------------------------------------------------------------------------
# Entries

@dataclass
class CacheEntry:
    image: str
    """Image path relative to OUTDIR, e.g. ``00000/samples/0000.png``."""
    digest: str
    """SHA-1 of the image bytes the detections were computed from."""
    classes: list[str]
    """The class vocabulary the detector was asked for."""
    detections: list[Detection]
    """Raw detections: all classes, no threshold, in the backend's order."""
    colors: dict[str, dict[str, str]] = field(default_factory=dict)
    """``color_key -> {"<class>/<detection index>": colour}`` for objects a colour clause inspected."""

    def to_json(self) -> dict:
        return {"version": CACHE_VERSION, "image": self.image, "digest": self.digest, "classes": self.classes,
                "detections": [detection_to_json(d) for d in self.detections], "colors": self.colors}

    @classmethod
    def from_json(cls, obj: dict) -> CacheEntry:
        return cls(image=obj["image"], digest=obj["digest"], classes=obj["classes"],
                   detections=[detection_from_json(d) for d in obj["detections"]], colors=obj["colors"])


class DetectionCache:
    """The cache directory of one detector key (see the module docstring)."""

    def __init__(self, root, key: dict):
        self.key = key
        self.dir = Path(root) / f"{key['detector']}-{_short_hash(key)}"

    def entry_path(self, image: str) -> Path:
        folder, _, name = Path(image).parts
        return self.dir / folder / f"{name}.json"

    def load(self, image: str, digest: str, classes: list[str]) -> CacheEntry | None:
        """The entry for ``image`` if it was computed from these bytes for at least ``classes``."""
        path = self.entry_path(image)
        if not path.is_file():
            return None
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            # Writes are atomic, so this is damage from outside; the entry is simply recomputed.
            warnings.warn(f"ignoring unreadable cache entry {path} ({err}); it will be recomputed", stacklevel=2)
            return None
        if obj.get("version") != CACHE_VERSION or obj["digest"] != digest or not set(classes) <= set(obj["classes"]):
            return None
        return CacheEntry.from_json(obj)

    def save(self, entry: CacheEntry) -> None:
        key_path = self.dir / KEY_FILE
        if not key_path.is_file():
            atomic_write_text(key_path, json.dumps(self.key, indent=2, sort_keys=True) + "\n")
        atomic_write_text(self.entry_path(entry.image), json.dumps(entry.to_json()))
