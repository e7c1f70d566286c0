"""Verdict agreement between two detector settings on one folder of images.

    python -m geneval.detectors.agreement OUTDIR --a detector_path=auto --b preprocess=mmdet3 \\
        [--a-name official --b-name mmdet3-preprocess] [--json agreement.json]

``--a`` and ``--b`` take GenEval settings (``key=value``, the ``geneval.evaluate`` overrides).
Each setting scores every image of OUTDIR (``<digits>/metadata.jsonl`` +
``<digits>/samples/<digits>.png``, any generator) into ``OUTDIR/.geneval_agreement/<name>.jsonl``,
sharing OUTDIR's detection cache, so rerunning is cheap. The report gives, over the images
both settings scored: the share of images with the same verdict (with its binomial standard
error), the same per tag, how many verdicts flipped each way, and each setting's GenEval
overall with the difference. Typical use: how far GenEval-style scores (``facebook/...``
weights, or ``preprocess=mmdet3``) are from official ones (converted GenEval weights with
``preprocess=mmdet2``); see docs/geneval.md.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from geneval.summary import load_results, summarize

AGREEMENT_DIR = ".geneval_agreement"
"""Hidden, so later scans of OUTDIR do not warn about a non-prompt folder."""


@dataclass
class Agreement:
    images: int
    agree: int
    rate: float
    rate_se: float
    """Binomial standard error of ``rate``: sqrt(p (1 - p) / n)."""
    a_only_correct: int
    b_only_correct: int
    per_tag: dict[str, tuple[int, int]]
    """``(agreeing, total)`` images per tag."""
    overall_a: float
    overall_b: float


def compare_verdicts(records_a: list[dict], records_b: list[dict]) -> Agreement:
    """Agreement of the ``correct`` verdicts of two results files, matched by filename."""
    by_name_b = {r["filename"]: r for r in records_b}
    pairs = [(r, by_name_b[r["filename"]]) for r in records_a if r["filename"] in by_name_b]
    if not pairs:
        raise ValueError("the two results files have no image in common; were they scored on the same folder?")
    per_tag: dict[str, list[int]] = {}
    for a, b in pairs:
        counts = per_tag.setdefault(a["tag"], [0, 0])
        counts[0] += a["correct"] == b["correct"]
        counts[1] += 1
    agree = sum(a["correct"] == b["correct"] for a, b in pairs)
    rate = agree / len(pairs)
    return Agreement(
        images=len(pairs), agree=agree, rate=rate, rate_se=math.sqrt(rate * (1 - rate) / len(pairs)),
        a_only_correct=sum(a["correct"] and not b["correct"] for a, b in pairs),
        b_only_correct=sum(b["correct"] and not a["correct"] for a, b in pairs),
        per_tag={tag: (c[0], c[1]) for tag, c in per_tag.items()},
        overall_a=summarize([a for a, _ in pairs]).overall, overall_b=summarize([b for _, b in pairs]).overall)


def format_agreement(result: Agreement, name_a: str, name_b: str) -> str:
    lines = [f"verdict agreement {name_a} vs {name_b}: {result.agree}/{result.images} images = "
             f"{100 * result.rate:.2f}% (SE {100 * result.rate_se:.2f})",
             f"correct only with {name_a}: {result.a_only_correct}; only with {name_b}: {result.b_only_correct}",
             f"GenEval overall on these images: {name_a} {result.overall_a:.5f}, {name_b} {result.overall_b:.5f} "
             f"(difference {result.overall_b - result.overall_a:+.5f})"]
    lines += [f"  {tag}: {agree}/{total} agree" for tag, (agree, total) in result.per_tag.items()]
    return "\n".join(lines)


def score_setting(outdir: Path, overrides: list[str], name: str) -> Path:
    """Score ``outdir`` with the evaluator defaults plus ``overrides``; returns the results file."""
    from geneval.evaluate import load_config, run_evaluation

    cfg = load_config(None, overrides)
    outfile = outdir / AGREEMENT_DIR / f"{name}.jsonl"
    outfile.parent.mkdir(exist_ok=True)
    run_evaluation(outdir, cfg, outfile=outfile)
    return outfile


def _name(value: str | None, overrides: list[str], fallback: str) -> str:
    name = value or "_".join(o.replace("/", "-").replace("=", "-") for o in overrides) or fallback
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"setting name {name!r} must be letters, digits, '-', '_' or '.'; pass --a-name/--b-name")
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m geneval.detectors.agreement",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--a", nargs="*", default=[], metavar="KEY=VALUE", help="first setting (default: defaults)")
    parser.add_argument("--b", nargs="*", default=[], metavar="KEY=VALUE", help="second setting")
    parser.add_argument("--a-name")
    parser.add_argument("--b-name")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    name_a, name_b = _name(args.a_name, args.a, "a"), _name(args.b_name, args.b, "b")
    if name_a == name_b:
        raise SystemExit(f"both settings are named {name_a!r}; give --a-name/--b-name")
    results_a = score_setting(args.outdir, args.a, name_a)
    results_b = score_setting(args.outdir, args.b, name_b)
    result = compare_verdicts(load_results(results_a), load_results(results_b))
    print(format_agreement(result, name_a, name_b))
    if args.json:
        args.json.write_text(json.dumps({"a": {"name": name_a, "settings": args.a, "results": str(results_a)},
                                         "b": {"name": name_b, "settings": args.b, "results": str(results_b)},
                                         **asdict(result)}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
