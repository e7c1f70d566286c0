"""Measure the embedded generator on a shapes-world suite: plain sampling vs an oracle best-of-N.

    python -m training.measure_generator --order mask --suite heldout --num-candidates 20

For every prompt, N candidates are decoded (seeded per prompt and candidate, as the runner
does) and every one is judged by the GenEval rules with the shapes detector. "single" is the
mean accuracy of one candidate (what a plain run scores in expectation); "oracle@k" is the
share of prompts where any of the first k candidates is correct: the upper bound of any
verifier picking among k. Overall is GenEval's unweighted mean over tags.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from geneval.suites import load_metadata
from geneval.rules import RuleConfig, evaluate_image, filter_detections
from shapes.detect import detect_image
from generation.base import run_to_end, seeded_generator
from generation.config import GenerationConfig
from generation.tiny.backend import TinyGenerator

SUITES = {"heldout": "geneval/prompts/shapes/evaluation_metadata.jsonl",
          "heldin": "geneval/prompts/shapes/heldin_metadata.jsonl"}
TAGS = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]


def judge(records_and_images) -> list[bool]:
    rules = RuleConfig()
    verdicts = []
    for record, image in records_and_images:
        detected = filter_detections(record, detect_image(image), rules)
        verdicts.append(evaluate_image(record, detected, rules)[0])
    return verdicts


def correctness_matrix(generator: TinyGenerator, records: list[dict], num_candidates: int, seed: int) -> np.ndarray:
    """``bool [P, N]``: whether candidate n of prompt p passes GenEval."""
    rows = []
    for index, record in enumerate(tqdm(records, desc="prompts", mininterval=10)):
        gens = [seeded_generator(seed, index, 0, c) for c in range(num_candidates)]
        images = run_to_end(generator, [record["prompt"]] * num_candidates, gens)
        rows.append(judge((record, img) for img in images.permute(0, 2, 3, 1).numpy()))
    return np.array(rows)


def per_tag(records: list[dict], values: np.ndarray) -> dict[str, float]:
    tags = np.array([r["tag"] for r in records])
    return {t: float(values[tags == t].mean()) for t in TAGS if (tags == t).any()}


def summarize(records: list[dict], correct: np.ndarray, ks: list[int]) -> dict[str, dict[str, float]]:
    rows = {"single": per_tag(records, correct.mean(1))}
    for k in ks:
        rows[f"oracle@{k}"] = per_tag(records, correct[:, :k].any(1))
    for scores in rows.values():
        scores["overall"] = float(np.mean([v for t, v in scores.items() if t in TAGS]))
    return rows


def to_markdown(rows: dict[str, dict[str, float]]) -> str:
    header = "| | " + " | ".join(TAGS) + " | overall |\n|---|" + "---|" * (len(TAGS) + 1) + "\n"
    lines = [f"| {name} | " + " | ".join(f"{s[t]:.2f}" if t in s else "-" for t in TAGS) + f" | {s['overall']:.3f} |"
             for name, s in rows.items()]
    return header + "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="weights/shapes")
    parser.add_argument("--order", choices=["mask", "raster"], default="mask")
    parser.add_argument("--suite", choices=sorted(SUITES), default="heldout")
    parser.add_argument("--num-candidates", type=int, default=20)
    parser.add_argument("--num-steps", type=int, default=12)
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--temperature-schedule", default="showo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    cfg = GenerationConfig(backend="tiny", weights=args.weights, order=args.order, num_steps=args.num_steps,
                           guidance_scale=args.guidance_scale, temperature=args.temperature,
                           temperature_schedule=args.temperature_schedule)
    records = load_metadata(SUITES[args.suite])
    start = time.time()
    correct = correctness_matrix(TinyGenerator(cfg), records, args.num_candidates, args.seed)
    ks = sorted({k for k in (1, 4, args.num_candidates) if k <= args.num_candidates})
    rows = summarize(records, correct, ks)
    print(f"{args.order} order, {args.suite} suite ({len(records)} prompts), N={args.num_candidates}, "
          f"{time.time() - start:.0f} s")
    print(to_markdown(rows))
    result = {"args": vars(args), "rows": rows, "seconds": time.time() - start}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
