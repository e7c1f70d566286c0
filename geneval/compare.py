"""Markdown table of scored runner output folders: GenEval per tag, the share of the oracle's gain,
and the compute each selection spent.

    python -m geneval.compare baseline=outputs/t1/mask/none "ORM zs=outputs/t1/mask/orm_zs" ... \\
        --baseline baseline --oracle oracle [--json docs/results/table1_mask.json]

Each ``NAME=OUTDIR`` is a ``main.py`` output folder that has been scored (``results.jsonl``).
"Share of oracle gain" is ``(overall - baseline) / (oracle - baseline)``: how much of the
improvement an evaluator-picked best-of-N achieves over plain decoding a verifier realises.
Generator forwards and judge calls are per kept image, summed over its candidates' traces
(``search.py``: candidate-rows times model forwards; one judge call per judged row).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from geneval.summary import TABLE_COLUMNS, Summary, load_results, overall_standard_error, summarize


def trace_totals(outdir: Path) -> dict[str, float | None]:
    """Mean generator forwards and judge calls per kept image, over every trace file of ``outdir``."""
    images, forwards, calls, counted = 0, 0.0, 0, True
    for path in sorted(outdir.glob("*/trace/*.jsonl")):
        images += 1
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("generator_forwards") is None:
                counted = False
            else:
                forwards += record["generator_forwards"]
            calls += record.get("judge_calls", 0)
    if not images:
        raise ValueError(f"{outdir} has no trace files (*/trace/*.jsonl); is it a main.py output folder?")
    return {"images": images, "generator_forwards": forwards / images if counted else None,
            "judge_calls": calls / images}


def load_row(spec: str) -> tuple[str, Path, Summary]:
    name, sep, folder = spec.partition("=")
    if not sep or not name or not folder:
        raise ValueError(f"{spec!r} is not NAME=OUTDIR")
    results = Path(folder) / "results.jsonl"
    if not results.is_file():
        raise ValueError(f"{results} does not exist; score the folder first (python -m geneval.evaluate {folder})")
    return name, Path(folder), summarize(load_results(results))


def build_rows(specs: list[str], baseline: str | None, oracle: str | None) -> list[dict]:
    loaded = [load_row(spec) for spec in specs]
    by_name = {name: summary for name, _, summary in loaded}
    for role, name in (("--baseline", baseline), ("--oracle", oracle)):
        if name is not None and name not in by_name:
            raise ValueError(f"{role} {name!r} is not one of the rows {sorted(by_name)}")
    gain = None
    if baseline is not None and oracle is not None:
        gain = by_name[oracle].overall - by_name[baseline].overall
    rows = []
    for name, folder, summary in loaded:
        share = None
        if gain:
            share = (summary.overall - by_name[baseline].overall) / gain
        rows.append({"method": name, "outdir": str(folder), "tags": summary.tag_accuracy,
                     "overall": summary.overall, "overall_se": overall_standard_error(summary),
                     "oracle_share": share, "images": summary.total_images,
                     **{k: v for k, v in trace_totals(folder).items() if k != "images"}})
    return rows


def markdown(rows: list[dict]) -> str:
    header = ["Method", *TABLE_COLUMNS.values(), "Overall ± SE", "Share of oracle gain", "Gen. forwards / image",
              "Judge calls / image"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        tags = [f"{row['tags'][t]:.2f}" if t in row["tags"] else "-" for t in TABLE_COLUMNS]
        share = "-" if row["oracle_share"] is None else f"{row['oracle_share']:.0%}"
        forwards = "-" if row["generator_forwards"] is None else f"{row['generator_forwards']:.0f}"
        overall = f"**{row['overall']:.3f}** ± {row['overall_se']:.3f}"
        lines.append("| " + " | ".join([row["method"], *tags, overall, share, forwards,
                                        f"{row['judge_calls']:.0f}"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="+", help="NAME=OUTDIR, in table order")
    parser.add_argument("--baseline", default=None, help="row NAME of plain decoding")
    parser.add_argument("--oracle", default=None, help="row NAME of the oracle best-of-N")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    try:
        rows = build_rows(args.rows, args.baseline, args.oracle)
    except ValueError as err:
        print(f"geneval.compare: error: {err}", file=sys.stderr)
        return 2
    print(markdown(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
