"""One tree's side of ``python -m bench.search --against REV`` (part 3 there): run by path inside a
checkout, so it imports only what every version of the repository has, and only in ``main``.

Prints one JSON line: per "ORDER POLICY", wall seconds, generator forwards, images and a digest of
the kept images, with the policies called as ``main.py`` calls them (``run.batch_size // N`` images
per call).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

PRESETS = {"mask": "configs/shapes.yaml", "raster": "configs/shapes_raster.yaml"}
POLICY_NAMES = {"best-of-N": "orm_ft", "PARM": "parm"}


def spread(records: list[dict], count: int) -> list[int]:
    """``count`` prompt indices taking the tags in turn (the suite is sorted by tag); ``bench.search`` uses it too."""
    by_tag: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        by_tag.setdefault(record["tag"], []).append(index)
    picked, queues = [], [list(q) for q in by_tag.values()]
    while len(picked) < count and any(queues):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    return sorted(picked)


def measure_orders(prompts: int, n: int, overrides: list[str]) -> dict:
    """One tree's figures (run as ``--child`` inside that tree; imports only what every version has)."""
    import torch

    import search as policies
    from config import load_config as load
    from generation import build_generator as build
    try:  # this tree: the registry builds a policy with its judge
        from policies import build_policy
    except ImportError:  # trees before the registry (e.g. 1328c41): search.POLICIES took (cfg, device)
        def build_policy(cfg, device):
            return policies.POLICIES[cfg.run.reward_model](cfg, device)

    out = {}
    for order, preset in PRESETS.items():
        cfg = load(preset, [f"run.search_num={n}", *overrides])
        metadata = [json.loads(line) for line in Path(cfg.run.metadata_file).read_text().splitlines() if line.strip()]
        texts = [line.strip() for line in Path(cfg.run.prompts_file).read_text(encoding="utf-8").splitlines()
                 if line.strip()]  # one prompt per line, as every tree's loader reads them
        requests = [policies.ImageRequest(texts[p], p, 0) for p in spread(metadata, prompts)]
        per_call = max(1, cfg.run.batch_size // n)  # main.py's chunking
        generator = build(cfg.generation, torch.device("cpu"))
        for name, policy_name in POLICY_NAMES.items():
            policy = build_policy(replace(cfg, run=replace(cfg.run, reward_model=policy_name)), torch.device("cpu"))
            policy(generator, requests[:1], cfg.run.seed)  # warm-up, not timed
            digest, before, start = hashlib.sha256(), generator.num_forwards, time.perf_counter()
            for first in range(0, len(requests), per_call):
                for selection in policy(generator, requests[first:first + per_call], cfg.run.seed):
                    digest.update(selection.image.contiguous().numpy().tobytes())
            out[f"{order} {name}"] = {"seconds": time.perf_counter() - start,
                                      "forwards": generator.num_forwards - before, "images": len(requests),
                                      "digest": digest.hexdigest()}
    return out



def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, required=True)
    parser.add_argument("--num-candidates", type=int, required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    print(json.dumps(measure_orders(args.prompts, args.num_candidates, args.overrides)))
