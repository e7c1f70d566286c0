"""How PARM decided in a run: first "clear" step, share of paths it stopped, images kept by the fallback.

    python -m scripts.parm_trace_stats outputs/table1/mask/parm --save docs/results/parm_decisions_mask.json
    python -m scripts.parm_trace_stats docs/results/parm_decisions_mask.json docs/results/parm_decisions_raster.json

Reads the per-candidate traces ``main.py`` writes (``OUTDIR/<prompt>/trace/<sample>.jsonl``, one line per
candidate, read back as ``search.ParmRecord``), or a decisions file ``--save`` wrote from them: per image,
each candidate's clear step and prune step, the chosen candidate and whether the fallback chose it (what
the figures need, small enough to commit where the run folders are not).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from geneval.layout import atomic_write_text
from search import ParmRecord


def trace_records(outdir: Path) -> dict[str, list[ParmRecord]]:
    """``"<prompt>/<sample>"`` -> the image's candidate records, from a run folder's traces."""
    images = {}
    for trace in sorted(outdir.glob("*/trace/*.jsonl")):
        key = f"{trace.parent.parent.name}/{trace.stem}"
        images[key] = [ParmRecord.from_json(json.loads(line)) for line in trace.read_text().splitlines()]
    if not images:
        raise ValueError(f"{outdir} has no trace files (OUTDIR/<prompt>/trace/*.jsonl); pass a main.py output folder")
    return images


def decisions(images: dict[str, list[ParmRecord]]) -> dict:
    """The fields the figures read, per image, as JSON."""
    return {key: {"clear_step": [r.clear_step for r in records], "prune_step": [r.prune_step for r in records],
                  "chosen": [r.candidate for r in records if r.chosen],
                  "fallback": any(r.chosen and r.fallback for r in records)}
            for key, records in images.items()}


def load_decisions(path: Path) -> dict[str, list[ParmRecord]]:
    """The records a ``decisions`` file holds (the fields it does not keep at their defaults)."""
    images = {}
    for key, image in json.loads(path.read_text()).items():
        images[key] = [ParmRecord(c, clear_step=clear, prune_step=prune, chosen=c in image["chosen"],
                                  fallback=image["fallback"] and c in image["chosen"])
                       for c, (clear, prune) in enumerate(zip(image["clear_step"], image["prune_step"]))]
    return images


def read(path: Path) -> dict[str, list[ParmRecord]]:
    return load_decisions(path) if path.is_file() else trace_records(path)


def parm_stats(path: Path) -> dict:
    images = read(path)
    records = [r for rs in images.values() for r in rs]
    clear_steps = [r.clear_step for r in records if r.clear_step is not None]
    return {"images": len(images), "paths": len(records),
            "mean_clear_step": statistics.mean(clear_steps) if clear_steps else None,
            "stopped_share": sum(r.prune_step is not None for r in records) / len(records),
            "fallback_images": sum(any(r.chosen and r.fallback for r in rs) for rs in images.values())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="main.py output folders or decisions files")
    parser.add_argument("--save", type=Path, help="write the decisions of the one folder given to this JSON file")
    args = parser.parse_args(argv)
    if args.save:
        if len(args.paths) != 1:
            parser.error("--save takes exactly one output folder")
        atomic_write_text(args.save, json.dumps(decisions(trace_records(args.paths[0]))) + "\n")
    for path in args.paths:
        print(path, json.dumps(parm_stats(path)))


if __name__ == "__main__":
    main()
