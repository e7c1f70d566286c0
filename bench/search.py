"""Test-time search cost on the shapes world: PARM against best-of-N, and the batched pipeline
against an upstream-style loop.

    python -m bench.search [--config configs/shapes.yaml] [--prompts 12] [--num-candidates 20] [--device cpu] \
        [key=value ...]

1. **PARM vs best-of-N** at N candidates on the first ``--prompts`` prompts of the suite (one
   image each, spread over the tags): generator forwards (candidate-rows times model forwards,
   as the runner's traces count them), wall time per image, and GenEval of the kept images by
   the evaluator. Best-of-N uses the fine-tuned ORM; PARM stops low-potential paths at once.
2. **Batched vs upstream-style**, same generator and judge, same N candidates of the same
   prompts: the runner's way (N rows of one canvas, one judge batch over the finals, images in
   memory) against upstream's loop (one candidate at a time, each final written as a PNG,
   read back, and judged alone: upstream orm.py/selector.py). Reports candidates/s of each.
Both sides run in this process on the same weights; the ratios are the figures to compare.
3. **Orders and code side by side** (``--against REV``; issue 12 section 2), as ``main.py`` runs it
   (``run.batch_size // N`` images per policy call): in both orders, best-of-N with the fine-tuned
   ORM and PARM at N candidates, on this working tree and on a checkout of ``REV`` (a temporary git
   worktree: the baseline code), each measurement a fresh subprocess, the trees interleaved
   ``--repeats`` times (medians reported; the CPU may be shared). Prints candidates/s (N x images
   over best-of-N's wall time), mask/raster ratio, PARM / best-of-N wall time, PARM / best-of-N
   forwards, and this tree against ``REV``; also checks both trees kept the same images.

    python -m bench.search --against 1328c41 [--prompts 4] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import search
from policies import build_policy
from bench.generation import machine
from bench.search_child import spread  # one tag-balanced pick for this tree and the child's
from config import load_config
from reward_models.oracle import GenEvalOracle
from geneval.suites import load_metadata, load_prompts
from generation import build_generator
from generation.base import run_to_end, seeded_generator
from reward_models import build_judge, verifiers


def timed_policy(policy, generator, requests, seed: int) -> tuple[list, float, int]:
    before, start = generator.num_forwards, time.perf_counter()
    selections = policy(generator, requests, seed)
    return selections, time.perf_counter() - start, generator.num_forwards - before


def parm_vs_best_of_n(cfg, generator, requests, oracle, device) -> dict:
    out = {}
    policies = {}
    for label, name in (("best-of-N (ORM ft)", "orm_ft"), ("PARM", "parm")):
        policies[label] = build_policy(replace(cfg, run=replace(cfg.run, reward_model=name)), device)
    for name, policy in policies.items():
        selections, seconds, forwards = timed_policy(policy, generator, requests, cfg.run.seed)
        images = torch.stack([s.image for s in selections])
        correct = oracle.verdicts(images, [r.prompt for r in requests])
        out[name] = {"forwards_per_image": forwards / len(requests), "seconds_per_image": seconds / len(requests),
                     "accuracy": float(np.mean(correct))}
    return out


def upstream_style(generator, judge, requests, n: int, seed: int, folder: Path) -> list[int]:
    """One candidate at a time, each final through a PNG file, one judge call per image; the picks."""
    picks = []
    for request in requests:
        scores = []
        for c in range(n):
            image = run_to_end(generator, [request.prompt],
                               [seeded_generator(seed, request.prompt_index, request.sample_index, c)])
            path = folder / f"{request.prompt_index}_{c}.png"
            Image.fromarray(image[0].permute(1, 2, 0).cpu().numpy()).save(path)
            again = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None]
            scores.append(verifiers.orm_scores(judge, again, [request.prompt]).item())
        picks.append(int(np.argmax(scores)))
    return picks


def batched_vs_upstream(cfg, generator, requests, device) -> dict:
    judge = build_judge(verifiers.judge_config(cfg.reward, cfg.reward_checkpoints, "orm_ft"), device)
    policy = search.FineTunedOrm(judge, cfg.search, cfg.run.search_num)
    n = cfg.run.search_num
    start = time.perf_counter()
    policy(generator, requests, cfg.run.seed)
    batched = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        upstream_style(generator, judge, requests, n, cfg.run.seed, Path(folder))
        loop = time.perf_counter() - start
    total = n * len(requests)
    return {"batched_candidates_per_s": total / batched, "upstream_candidates_per_s": total / loop,
            "speedup": loop / batched}


def print_costs(costs: dict) -> None:
    base = costs["best-of-N (ORM ft)"]
    print("| selection | generator forwards / image | s / image | GenEval accuracy of kept images |")
    print("|---|---|---|---|")
    for name, row in costs.items():
        print(f"| {name} | {row['forwards_per_image']:.0f} ({row['forwards_per_image'] / base['forwards_per_image']:.2f}x)"
              f" | {row['seconds_per_image']:.2f} ({row['seconds_per_image'] / base['seconds_per_image']:.2f}x)"
              f" | {row['accuracy']:.3f} |")


# ----------------------------------------------------------------------------
# 3. Orders and code side by side

PRESETS = ("mask", "raster")
POLICY_NAMES = ("best-of-N", "PARM")


def run_child(tree: Path, prompts: int, n: int, overrides: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    child = Path(__file__).resolve().with_name("search_child.py")
    # Loaded by path under its own name, so the tree's modules (search, generation, ...) resolve
    # from PYTHONPATH=tree, not from bench/.
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('search_child', sys.argv[1]); "
            "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); module.main(sys.argv[2:])")
    command = [sys.executable, "-c", code, str(child), "--prompts", str(prompts), "--num-candidates", str(n),
               *overrides]
    result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"measurement in {tree} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def side_by_side(against: str, prompts: int, n: int, repeats: int, overrides: list[str]) -> dict:
    here = Path(__file__).resolve().parents[1]
    runs: dict[str, list[dict]] = {"this tree": [], against: []}
    with tempfile.TemporaryDirectory() as folder:
        baseline = Path(folder) / "baseline"
        subprocess.run(["git", "-C", str(here), "worktree", "add", "--detach", str(baseline), against], check=True,
                       capture_output=True)
        try:
            for _ in range(repeats):  # interleaved, so load from other processes hits both trees alike
                runs[against].append(run_child(baseline, prompts, n, overrides))
                runs["this tree"].append(run_child(here, prompts, n, overrides))
        finally:
            subprocess.run(["git", "-C", str(here), "worktree", "remove", "--force", str(baseline)], check=False)
    return runs


def median_of(runs: list[dict], key: str, field: str) -> float:
    return statistics.median(run[key][field] for run in runs)


def print_side_by_side(runs: dict[str, list[dict]], n: int) -> None:
    trees = list(runs)
    print("| tree | order | best-of-N s/image | candidates/s | PARM s/image | PARM / best-of-N wall "
          "| PARM / best-of-N forwards |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for tree in trees:
        for order in PRESETS:
            bon, parm = (median_of(runs[tree], f"{order} {name}", "seconds") for name in POLICY_NAMES)
            images = runs[tree][0][f"{order} best-of-N"]["images"]
            forwards = {name: runs[tree][0][f"{order} {name}"]["forwards"] for name in POLICY_NAMES}
            summary[tree, order] = {"bon": bon / images, "rate": n * images / bon, "parm": parm / images}
            print(f"| {tree} | {order} | {bon / images:.2f} | {n * images / bon:.2f} | {parm / images:.2f} "
                  f"| {parm / bon:.2f} | {forwards['PARM'] / forwards['best-of-N']:.2f} |")
    for tree in trees:
        print(f"{tree}: raster / mask candidates/s = "
              f"{summary[tree, 'raster']['rate'] / summary[tree, 'mask']['rate']:.2f}x (target <= 2)")
    base, new = trees[1], trees[0]
    for order in PRESETS:
        print(f"{order}: this tree vs {base}: best-of-N {summary[base, order]['bon'] / summary[new, order]['bon']:.2f}x"
              f" faster, PARM {summary[base, order]['parm'] / summary[new, order]['parm']:.2f}x faster")
    same = all(run[key]["digest"] == runs[trees[0]][0][key]["digest"] for tree in trees for run in runs[tree]
               for key in run)
    print(f"kept images identical across trees and repeats: {same}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/shapes.yaml")
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--num-candidates", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--speed-only", action="store_true", help="only part 2 (any judge weights of the "
                        "right architecture time the same)")
    parser.add_argument("--against", default=None, help="part 3 only: this tree against git revision REV")
    parser.add_argument("--repeats", type=int, default=2, help="part 3: interleaved runs of each tree")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    if args.against:
        print(f"machine: {machine()}")
        print(f"{args.prompts} prompts, one image each, N={args.num_candidates}, {args.repeats} interleaved repeats")
        print_side_by_side(side_by_side(args.against, args.prompts, args.num_candidates, args.repeats,
                                        args.overrides), args.num_candidates)
        return
    cfg = load_config(args.config, [f"run.device={args.device}", f"run.search_num={args.num_candidates}",
                                    *args.overrides])
    cfg = replace(cfg, run=replace(cfg.run, batch_size=max(cfg.run.batch_size, args.num_candidates)))
    device = torch.device(args.device)
    generator = build_generator(cfg.generation, device)
    prompts, metadata = load_prompts(cfg.run.prompts_file), load_metadata(cfg.run.metadata_file)
    requests = [search.ImageRequest(prompts[p], p, 0) for p in spread(metadata, args.prompts)]
    oracle = GenEvalOracle(cfg.geneval, metadata, "cpu")
    print(f"machine: {machine()}")
    print(f"config: {args.config} ({cfg.generation.order} order), {len(requests)} prompts, N={args.num_candidates}")
    if not args.speed_only:
        print_costs(parm_vs_best_of_n(cfg, generator, requests, oracle, device))
    speed = batched_vs_upstream(cfg, generator, requests, device)
    print(f"batched pipeline {speed['batched_candidates_per_s']:.1f} candidates/s, upstream-style loop "
          f"{speed['upstream_candidates_per_s']:.1f} candidates/s: {speed['speedup']:.1f}x")


if __name__ == "__main__":
    main()
