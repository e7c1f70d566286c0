"""A GenEval OUTDIR of rendered shapes-world scenes with every kind of bad entry, and the records it is made
from (shared by test_evaluate.py, test_hardening.py and test_agreement.py)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from geneval.layout import prompt_dir, write_metadata, write_sample
from shapes.render import render, sample_scene

REPO = Path(__file__).resolve().parents[1]
SHAPES_METADATA = REPO / "geneval" / "prompts" / "shapes" / "evaluation_metadata.jsonl"
TAGS = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
IMAGES_PER_PROMPT = 2


def one_record_per_tag() -> list[dict]:
    records = [json.loads(line) for line in SHAPES_METADATA.read_text().splitlines()]
    return [next(r for r in records if r["tag"] == tag) for tag in TAGS]


def single_object_of_other_class(metadata: dict) -> dict:
    records = [json.loads(line) for line in SHAPES_METADATA.read_text().splitlines()]
    return next(r for r in records if r["tag"] == "single_object" and r["include"] != metadata["include"])


def make_outdir(root: Path) -> dict:
    """An OUTDIR with 6 good prompts x 2 images, a wrong image, a corrupt PNG and bad folders.

    Returns what the results must say: scored filenames, the wrong image, the error filenames.
    """
    outdir = root / "out"
    rng = np.random.default_rng(0)
    records = one_record_per_tag()
    for index, metadata in enumerate(records):
        write_metadata(outdir, index, metadata)
        for sample in range(IMAGES_PER_PROMPT):
            write_sample(outdir, index, sample, render(sample_scene(metadata, rng)))
    # Prompt 6 in a 4-digit folder with indented metadata (both occur in the wild).
    metadata = records[0]
    folder6 = outdir / "0006"
    (folder6 / "samples").mkdir(parents=True)
    (folder6 / "metadata.jsonl").write_text(json.dumps(metadata, indent=4))
    wrong_scene = sample_scene(single_object_of_other_class(metadata), rng)
    write_sample(outdir, 6, 0, render(sample_scene(metadata, rng)))
    os.replace(prompt_dir(outdir, 6) / "samples" / "0000.png", folder6 / "samples" / "0000.png")
    write_sample(outdir, 6, 1, render(wrong_scene))  # shows another shape than the prompt asks
    os.replace(prompt_dir(outdir, 6) / "samples" / "0001.png", folder6 / "samples" / "0001.png")
    prompt_dir(outdir, 6).joinpath("samples").rmdir()
    prompt_dir(outdir, 6).rmdir()
    (folder6 / "samples" / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    good_png = (folder6 / "samples" / "0000.png").read_bytes()
    (folder6 / "samples" / "0003.png").write_bytes(good_png[:len(good_png) // 2])  # a killed non-atomic writer
    (folder6 / "samples" / "grid.png").write_bytes(b"ignored, like upstream")
    # A folder with malformed metadata, and a folder that is not a prompt folder at all.
    (outdir / "00007" / "samples").mkdir(parents=True)
    (outdir / "00007" / "metadata.jsonl").write_text("{not json")
    (outdir / "junk").mkdir()
    scored = [os.path.join(str(outdir), f"{i:05d}", "samples", f"{s:04d}.png")
              for i in range(len(records)) for s in range(IMAGES_PER_PROMPT)]
    scored += [os.path.join(str(outdir), "0006", "samples", name) for name in ("0000.png", "0001.png")]
    return {"outdir": outdir, "scored": scored, "wrong": scored[-1], "metadata6": metadata,
            "errors": [os.path.join(str(outdir), "0006", "samples", name) for name in ("0002.png", "0003.png")]
            + [str(outdir / "00007")]}
