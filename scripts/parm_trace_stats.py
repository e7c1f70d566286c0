"""How PARM decided in a run: first "clear" step, share of paths it stopped, images kept by the fallback.

    python -m scripts.parm_trace_stats outputs/table1/mask/parm outputs/table1/raster/parm

Reads the per-candidate traces ``main.py`` writes (``OUTDIR/<prompt>/trace/<sample>.jsonl``, one line per
candidate, read back as ``search.ParmRecord``).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from search import ParmRecord


def parm_stats(outdir: Path) -> dict:
    clear_steps, paths, stopped, images, fallback = [], 0, 0, 0, 0
    for trace in sorted(outdir.glob("*/trace/*.jsonl")):
        records = [ParmRecord.from_json(json.loads(line)) for line in trace.read_text().splitlines()]
        images += 1
        paths += len(records)
        clear_steps += [r.clear_step for r in records if r.clear_step is not None]
        stopped += sum(r.prune_step is not None for r in records)
        fallback += any(r.chosen and r.fallback for r in records)
    if not images:
        raise ValueError(f"{outdir} has no trace files (OUTDIR/<prompt>/trace/*.jsonl); pass a main.py output folder")
    return {"images": images, "paths": paths,
            "mean_clear_step": statistics.mean(clear_steps) if clear_steps else None,
            "stopped_share": stopped / paths, "fallback_images": fallback}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdirs", nargs="+", type=Path)
    for outdir in parser.parse_args(argv).outdirs:
        print(outdir, json.dumps(parm_stats(outdir)))


if __name__ == "__main__":
    main()
