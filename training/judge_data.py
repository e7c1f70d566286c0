"""Labelled generations for the shapes-world judges, made with the embedded generator.

    python -m training.judge_data --order mask --suite train --groups 320 --out data/judges/mask_train.pt

The paper labels Show-o's own generations (paper section 3.2, the reward-model data); this does the same at
small scale, with the shapes evaluator (detector + GenEval rules) as the labeller:

- **final images** (ORM ft, PARM's best-of-N' question): the evaluator's verdict. Paper: 288K
  labelled generations of 13K prompts.
- **every step's preview** (the model's full current guess, what search policies show their
  judge) is kept with its step index. Clarity labels are static by step and potential labels are
  the path's final verdict (paper: steps "after 11" of 18 clear, "before 10" unclear; potential
  = the path's final ORM label); ``training.train_judges`` applies both when it reads this file.
- **PRM** (Math-Shepherd style, paper section 3.2): the preview after step ``k`` of ``prm_rows``
  paths of ``prm_groups`` prompts (evenly spread over the list) is labelled yes iff any of
  ``continuations`` (paper: 4) fresh continuations from that exact state ends correct.
  ``prm_hits`` keeps the count.
- **reflection** (PARM++): for every final image, the image tokens a correction should decode
  again and a critique category (``reward_models.shapes_judge.CRITIQUES``), derived from the
  evaluator's detections by ``reflection_target``. Paper PARM++ has GPT-4o write the critiques;
  here the evaluator's structured failure stands in for it.

Codes are stored rather than pictures: the preview of codes ``c`` is ``decode(c)``, and the
judges' patch tokenizer reads a decoded cell back as the same code (``tests/test_judge_data.py``
checks it), so training on codes is training on the pictures the judge sees at run time.

Suites: ``train`` draws prompts from the training pool (never an evaluation prompt), the same
number from every tag;
``heldout`` uses the evaluation suite's prompts with seeds the evaluation runs never use, only
for reporting judge accuracy.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from geneval.detection import Detection
from geneval.suites import load_metadata
from geneval.rules import RuleConfig, evaluate_image, filter_detections, relative_position
from shapes.detect import detect_image
from shapes.world import CELL, GRID
from generation.base import seeded_generator
from generation.config import GenerationConfig
from generation.tiny.backend import TinyGenerator
from reward_models.shapes_judge import CRITIQUES

SUITES = {"train": "geneval/prompts/shapes/train_metadata.jsonl",
          "heldout": "geneval/prompts/shapes/evaluation_metadata.jsonl"}
SUITE_SEEDS = {"train": 1000, "heldout": 2000}
"""Seed bases; the evaluation runs use ``run.seed`` (0 in the presets), so their paths differ."""


# ----------------------------------------------------------------------------
# Labels from the evaluator

def reflection_target(record: dict, detected: dict[str, list[Detection]], rules: RuleConfig
                      ) -> tuple[str, torch.Tensor]:
    """``(critique, regenerate)`` of one image: the first failing clause and the tokens to redo.

    Follows ``geneval.rules.evaluate_image`` clause by clause on the same filtered detections.
    The objects that satisfy their clause are kept (their token cells stay); everything else,
    background included, is flagged so a correction can redraw it: a missing object needs free
    cells, a wrongly coloured or misplaced one must go, an extra one (too many) is dropped
    because only the top-``count`` objects of a clause are kept. A correct image flags nothing.
    """
    critique, kept, matched = "ok", [], []
    for index, clause in enumerate(record.get("include", [])):
        found = detected.get(clause["class"], [])[:clause["count"]]
        failure, good = None, found
        if len(found) < clause["count"]:
            failure = f"missing-{index}"
        elif "color" in clause:
            good = [d for d in found if d.color == clause["color"]]
            failure = None if len(good) >= clause["count"] else f"color-{index}"
        elif "position" in clause:
            relation, group = clause["position"]
            targets = matched[group]
            if targets is None or any(relation not in relative_position(d.box, t.box, rules.position_threshold)
                                      for d in found for t in targets):
                failure, good = "position", []
        matched.append(None if failure else found)
        kept += good
        if failure and critique == "ok":
            critique = failure
    for clause in record.get("exclude", []):
        if len(detected.get(clause["class"], [])) >= clause["count"] and critique == "ok":
            critique = "extra"
    if critique == "ok":
        return critique, torch.zeros(GRID * GRID, dtype=torch.bool)
    keep = torch.zeros(GRID, GRID, dtype=torch.bool)
    for det in kept:
        x1, y1, x2, y2 = (int(v) for v in det.box)
        keep[y1 // CELL:y2 // CELL + 1, x1 // CELL:x2 // CELL + 1] = True
    return critique, ~keep.flatten()


def label_images(records: list[dict], images: torch.Tensor, rules: RuleConfig
                 ) -> tuple[list[bool], list[str], torch.Tensor]:
    """GenEval verdict, critique and ``bool [B, N]`` regenerate mask of each ``uint8 [B, 3, H, W]`` image."""
    verdicts, critiques, regenerate = [], [], []
    for record, image in zip(records, images.permute(0, 2, 3, 1).cpu().numpy()):
        detected = filter_detections(record, detect_image(image), rules)
        correct, _ = evaluate_image(record, detected, rules)
        critique, flagged = reflection_target(record, detected, rules)
        assert correct == (critique == "ok"), (record, critique)
        verdicts.append(correct)
        critiques.append(critique)
        regenerate.append(flagged)
    return verdicts, critiques, torch.stack(regenerate)


# ----------------------------------------------------------------------------
# Generation

def continuation_hits(generator: TinyGenerator, canvas, rows: list[int], records: list[dict], step: int,
                      continuations: int, seed: int, groups: list[int], rules: RuleConfig) -> list[int]:
    """How many of ``continuations`` fresh continuations of each row ends correct (Math-Shepherd)."""
    index = torch.tensor([row for row in rows for _ in range(continuations)])
    branch = canvas.select(index)
    branch.generators = [seeded_generator(seed, groups[row], 1 + step, row * continuations + j)
                         for row in rows for j in range(continuations)]
    while branch.step_index < generator.num_steps:
        branch = generator.step(branch)
    verdicts, _, _ = label_images([records[row] for row in index.tolist()], generator.finish(branch), rules)
    return np.array(verdicts).reshape(len(rows), continuations).sum(1).tolist()


def generate(generator: TinyGenerator, records: list[dict], args: argparse.Namespace) -> dict:
    """Trajectories of ``args.candidates`` paths per record, with their labels (module docstring)."""
    rules, seed = RuleConfig(), SUITE_SEEDS[args.suite] + args.seed
    steps = generator.num_steps
    prm_steps = set(range(args.prm_first, steps, args.prm_every))
    prm_groups = set(range(0, len(records), max(1, len(records) // max(args.prm_groups, 1)))[:args.prm_groups])
    out = {key: [] for key in ("traj_group", "previews", "label", "critique", "regenerate",
                               "prm_group", "prm_step", "prm_codes", "prm_hits")}
    batches = range(0, len(records), args.groups_per_batch)
    for first in tqdm(batches, desc=f"judge data ({generator.cfg.order})", mininterval=10):
        groups = [g for g in range(first, min(first + args.groups_per_batch, len(records)))
                  for _ in range(args.candidates)]
        rows_records = [records[g] for g in groups]
        canvas = generator.start([r["prompt"] for r in rows_records],
                                 [seeded_generator(seed, g, 0, i % args.candidates) for i, g in enumerate(groups)])
        previews = []
        for _ in range(steps):
            canvas = generator.step(canvas)
            previews.append(generator.preview_codes(canvas).cpu())
            if canvas.step_index in prm_steps and canvas.step_index < steps:
                rows = [i for i, g in enumerate(groups) if g in prm_groups and i % args.candidates < args.prm_rows]
                if rows:
                    hits = continuation_hits(generator, canvas, rows, rows_records, canvas.step_index,
                                             args.continuations, seed, groups, rules)
                    out["prm_group"] += [groups[r] for r in rows]
                    out["prm_step"] += [canvas.step_index] * len(rows)
                    out["prm_codes"].append(previews[-1][rows])
                    out["prm_hits"] += hits
        verdicts, critiques, regenerate = label_images(rows_records, generator.finish(canvas), rules)
        out["traj_group"] += groups
        out["previews"].append(torch.stack(previews, 1))
        out["label"] += verdicts
        out["critique"] += [CRITIQUES.index(c) for c in critiques]
        out["regenerate"].append(regenerate)
    return {
        "prompts": [r["prompt"] for r in records], "records": records,
        "order": generator.cfg.order, "num_steps": steps, "continuations": args.continuations,
        "traj_group": torch.tensor(out["traj_group"]), "previews": torch.cat(out["previews"]).short(),
        "label": torch.tensor(out["label"]), "critique": torch.tensor(out["critique"]),
        "regenerate": torch.cat(out["regenerate"]),
        "prm_group": torch.tensor(out["prm_group"], dtype=torch.long),
        "prm_step": torch.tensor(out["prm_step"], dtype=torch.long),
        "prm_codes": torch.cat(out["prm_codes"]).short() if out["prm_codes"] else torch.zeros(0, 64).short(),
        "prm_hits": torch.tensor(out["prm_hits"], dtype=torch.long),
    }


def pick_records(suite: str, groups: int, seed: int) -> list[dict]:
    """``groups`` prompts of the suite, seeded.

    ``heldout``: all of them (or a sample without repeats). ``train``: the same number from every
    tag, since the pool is mostly colour-attribute prompts (its combinatorics) and a judge must
    see every kind of clause; a tag with fewer prompts than its share repeats some (with other
    seeds, as every group has its own).
    """
    records = load_metadata(SUITES[suite])
    rng = np.random.default_rng(seed)
    if suite != "train":
        return records if groups >= len(records) else [records[i] for i in sorted(rng.permutation(len(records))[:groups])]
    by_tag: dict[str, list[dict]] = {}
    for record in records:
        by_tag.setdefault(record["tag"], []).append(record)
    picked = []
    for index, tag_records in enumerate(by_tag.values()):
        share = groups // len(by_tag) + (index < groups % len(by_tag))
        order = rng.permutation(len(tag_records))
        picks = [order[i % len(order)] if i < len(order) else rng.integers(len(order)) for i in range(share)]
        picked += [tag_records[i] for i in picks]
    return picked


def save_atomically(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(data, partial)
    os.replace(partial, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--order", choices=["mask", "raster"], default="mask")
    parser.add_argument("--suite", choices=sorted(SUITES), default="train")
    parser.add_argument("--groups", type=int, default=320, help="prompts (all of the suite if larger)")
    parser.add_argument("--candidates", type=int, default=8, help="paths per prompt")
    parser.add_argument("--groups-per-batch", type=int, default=4)
    parser.add_argument("--prm-groups", type=int, default=100, help="this many prompts, evenly spread over the "
                        "list (so over the tags), get PRM labels")
    parser.add_argument("--prm-rows", type=int, default=2, help="paths per prompt that get PRM labels")
    parser.add_argument("--prm-first", type=int, default=2, help="first step with PRM labels")
    parser.add_argument("--prm-every", type=int, default=2, help="PRM labels every this many steps")
    parser.add_argument("--continuations", type=int, default=4, help="Math-Shepherd continuations (paper: 4)")
    parser.add_argument("--config", default=None, help="preset with the generation settings (default: the "
                        "shapes preset of --order)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    return parser.parse_args(argv)


PRESETS = {"mask": "configs/shapes.yaml", "raster": "configs/shapes_raster.yaml"}


def generation_config(path: str | None, order: str) -> GenerationConfig:
    from config import load_config

    cfg = load_config(path or PRESETS[order]).generation
    if cfg.backend != "tiny" or cfg.order != order:
        raise ValueError(f"--config {path} sets generation.backend={cfg.backend!r}, order={cfg.order!r}; the judge "
                         f"data needs the tiny backend in {order!r} order (e.g. {PRESETS[order]})")
    return cfg


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    generator = TinyGenerator(generation_config(args.config, args.order))
    records = pick_records(args.suite, args.groups, args.seed)
    start = time.time()
    data = generate(generator, records, args)
    data["args"], data["seconds"] = vars(args), time.time() - start
    save_atomically(data, Path(args.out))
    print(json.dumps({"out": args.out, "trajectories": len(data["label"]), "yes_share": data["label"].float().mean().item(),
                      "prm_labels": len(data["prm_hits"]), "seconds": round(data["seconds"], 1)}))


if __name__ == "__main__":
    main()
