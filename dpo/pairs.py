"""DPO pair files from labelled candidate images (paper section 3.3; upstream data/dpo*.jsonl).

    python -m dpo.pairs OUTDIR --out pairs.jsonl                          # labels: OUTDIR/results.jsonl
    python -m dpo.pairs OUTDIR --out pairs.jsonl --labels judge --judge weights/shapes/judges/orm
    python -m dpo.pairs OUTDIR --out pairs.jsonl --mode parm --parm weights/shapes/judges/parm

OUTDIR is a ``main.py`` output folder (GenEval layout): ``<digits>/metadata.jsonl`` and
``<digits>/samples/*.png``, several images per prompt. Each image gets a yes/no label, either
from the GenEval evaluator (``results.jsonl`` of ``python -m geneval.evaluate OUTDIR``, its
``correct`` field) or from a yes/no judge (``P(yes) > P(no)`` on the ORM question). Prompts
whose images all share one label give no pair and are dropped (the paper's iterative round).

- ``--mode random`` (the paper's initial DPO): per prompt, a random "yes" image against a random
  "no" image (without replacement when ``--pairs-per-prompt`` > 1).
- ``--mode parm``: PARM-guided pairs and weights (``dpo.guidance``).

A line of the pair file: ``{"prompt", "chosen", "rejected", "weight", "tag"}``; ``chosen`` and
``rejected`` are image paths (as found) or lists of image token ids; ``weight`` defaults to 1.
The file is written atomically; a summary line goes to stdout.
"""
from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from geneval.layout import SAMPLES_DIR, atomic_write_text, scan_outdir

LABELERS = ("geneval", "judge")
MODES = ("random", "parm")


@dataclass
class Candidate:
    prompt: str
    tag: str
    image: str
    """Path of the PNG (or any key the caller uses for the image)."""
    label: bool | None = None
    """Evaluator or judge verdict: True = "yes", the image matches the prompt."""
    score: float | None = None
    """PARM confidence ``P(yes)/(P(yes)+P(no))`` (``--mode parm`` only)."""


@dataclass
class PairStats:
    prompts: int = 0
    dropped_all_yes: int = 0
    dropped_all_no: int = 0
    pairs: int = 0


# -- candidates and labels -------------------------------------------------------------------------
def scan_candidates(outdir: str | Path) -> dict[str, list[Candidate]]:
    """``prompt folder name -> its candidates`` (unlabelled), in folder and image order."""
    groups = {}
    for folder in scan_outdir(outdir):
        if folder.error is not None:
            raise ValueError(f"{folder.error}; fix or remove the folder before building pairs")
        groups[folder.name] = [Candidate(folder.metadata["prompt"], folder.metadata["tag"], str(folder.image_path(name)))
                               for name in folder.images]
    if not groups:
        raise ValueError(f"{outdir} holds no prompt folders; generate candidates with main.py first")
    return groups


def relative_key(path: str) -> str:
    """``<folder>/samples/<name>``: the part of a results ``filename`` that does not depend on OUTDIR's spelling."""
    parts = Path(path).parts
    if len(parts) < 3 or parts[-2] != SAMPLES_DIR:
        raise ValueError(f"{path!r} is not a GenEval image path <outdir>/<folder>/{SAMPLES_DIR}/<name>")
    return "/".join(parts[-3:])


def apply_geneval_labels(groups: dict[str, list[Candidate]], results_file: str | Path) -> None:
    """Set each candidate's label from the ``correct`` field of a ``results.jsonl`` (geneval/evaluate.py)."""
    results_file = Path(results_file)
    if not results_file.is_file():
        raise ValueError(f"no results file {results_file}; label the images with `python -m geneval.evaluate OUTDIR`")
    verdicts = {}
    for line in results_file.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        verdicts[relative_key(record["filename"])] = bool(record["correct"])
    for candidates in groups.values():
        for candidate in candidates:
            key = relative_key(candidate.image)
            if key not in verdicts:
                raise ValueError(f"{results_file} has no verdict for {key}; re-run `python -m geneval.evaluate` "
                                 "on this OUTDIR")
            candidate.label = verdicts[key]


def load_images(paths: list[str]) -> torch.Tensor:
    """``uint8 [B, 3, H, W]`` from PNG files."""
    arrays = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def judge_candidates(groups: dict[str, list[Candidate]], judge, batch_size: int = 256) -> list[float]:
    """The judge's confidence (``dpo.guidance.judge_scores``) of every candidate, in group order."""
    from dpo.guidance import judge_scores

    flat = [c for candidates in groups.values() for c in candidates]
    scores = []
    for start in range(0, len(flat), batch_size):
        chunk = flat[start:start + batch_size]
        scores += judge_scores(judge, load_images([c.image for c in chunk]), [c.prompt for c in chunk]).tolist()
    return scores


def apply_judge_labels(groups: dict[str, list[Candidate]], judge) -> None:
    """Label = the judge says yes (``P(yes) > P(no)``)."""
    flat = [c for candidates in groups.values() for c in candidates]
    for candidate, score in zip(flat, judge_candidates(groups, judge)):
        candidate.label = score > 0.5


def apply_parm_scores(groups: dict[str, list[Candidate]], judge) -> None:
    flat = [c for candidates in groups.values() for c in candidates]
    for candidate, score in zip(flat, judge_candidates(groups, judge)):
        candidate.score = score


# -- pairing ---------------------------------------------------------------------------------------
def split_labels(candidates: list[Candidate]) -> tuple[list[Candidate], list[Candidate]]:
    if any(c.label is None for c in candidates):
        raise ValueError(f"prompt {candidates[0].prompt!r} has unlabelled candidates; label them first")
    return [c for c in candidates if c.label], [c for c in candidates if not c.label]


def pair_record(chosen: Candidate, rejected: Candidate, weight: float = 1.0) -> dict:
    return {"prompt": chosen.prompt, "chosen": chosen.image, "rejected": rejected.image, "weight": weight,
            "tag": chosen.tag}


def random_pairs(groups: dict[str, list[Candidate]], seed: int = 0,
                 pairs_per_prompt: int = 1) -> tuple[list[dict], PairStats]:
    """The paper's initial pairs: random "yes" x random "no" per prompt; all-same-label prompts dropped."""
    rng, records, stats = random.Random(seed), [], PairStats()
    for candidates in groups.values():
        stats.prompts += 1
        yes, no = split_labels(candidates)
        if not no:
            stats.dropped_all_yes += 1
            continue
        if not yes:
            stats.dropped_all_no += 1
            continue
        count = min(pairs_per_prompt, len(yes), len(no))
        records += [pair_record(c, r) for c, r in zip(rng.sample(yes, count), rng.sample(no, count))]
    stats.pairs = len(records)
    return records, stats


def parm_pairs(groups: dict[str, list[Candidate]], pairs_per_prompt: int = 1,
               min_weight: float = 0.05) -> tuple[list[dict], PairStats]:
    """PARM-guided pairs (``dpo.guidance``): best-scored "yes" vs best-scored "no", confidence weights."""
    from dpo.guidance import hard_negative_pairs, pair_weights

    chosen_rejected, stats = [], PairStats()
    for candidates in groups.values():
        stats.prompts += 1
        yes, no = split_labels(candidates)
        if not no or not yes:
            stats.dropped_all_yes += not no
            stats.dropped_all_no += not yes
            continue
        if any(c.score is None for c in candidates):
            raise ValueError(f"prompt {candidates[0].prompt!r} has candidates without a PARM score")
        for i, j in hard_negative_pairs([c.score for c in yes], [c.score for c in no], pairs_per_prompt):
            chosen_rejected.append((yes[i], no[j]))
    weights = pair_weights([c.score for c, _ in chosen_rejected], min_weight)
    records = [pair_record(c, r, w) for (c, r), w in zip(chosen_rejected, weights)]
    stats.pairs = len(records)
    return records, stats


# -- pair files ------------------------------------------------------------------------------------
def write_pairs(path: str | Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def read_pairs(path: str | Path) -> list[dict]:
    """The records of a pair file, checked: ``prompt``, ``chosen``, ``rejected`` (paths or token lists)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no pair file {path}; build one with `python -m dpo.pairs OUTDIR --out {path}`")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        record = json.loads(line)
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in record]
        if missing:
            raise ValueError(f"{path}:{number}: missing {missing}; a pair needs prompt, chosen and rejected")
        for side in ("chosen", "rejected"):
            if not isinstance(record[side], (str, list)):
                raise ValueError(f"{path}:{number}: {side} must be an image path or a list of token ids")
        record.setdefault("weight", 1.0)
        records.append(record)
    if not records:
        raise ValueError(f"{path} holds no pairs; every prompt had images of one label only? Generate more "
                         "candidates per prompt (run.eval_num)")
    return records


def build_judge(checkpoint: str):
    from reward_models.judge import JudgeConfig
    from reward_models.shapes_judge import ShapesJudge

    return ShapesJudge(JudgeConfig(backend="shapes", checkpoint=checkpoint))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dpo.pairs", description=__doc__.splitlines()[0])
    parser.add_argument("outdir", help="main.py output folder with the candidate images")
    parser.add_argument("--out", required=True, help="pair file to write (JSONL)")
    parser.add_argument("--labels", choices=LABELERS, default="geneval",
                        help="who says yes/no: the GenEval evaluator's results file, or a judge")
    parser.add_argument("--results", default=None, help="evaluator results (default: OUTDIR/results.jsonl)")
    parser.add_argument("--judge", default=None, help="shapes judge checkpoint for --labels judge")
    parser.add_argument("--mode", choices=MODES, default="random", help="random pairs or PARM-guided pairs")
    parser.add_argument("--parm", default=None, help="PARM judge checkpoint for --mode parm")
    parser.add_argument("--pairs-per-prompt", type=int, default=1)
    parser.add_argument("--min-weight", type=float, default=0.05, help="--mode parm: weight floor before normalising")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.labels == "judge" and not args.judge:
        raise SystemExit("--labels judge needs --judge CHECKPOINT")
    if args.mode == "parm" and not args.parm:
        raise SystemExit("--mode parm needs --parm CHECKPOINT")
    groups = scan_candidates(args.outdir)
    if args.labels == "geneval":
        apply_geneval_labels(groups, args.results or Path(args.outdir) / "results.jsonl")
    else:
        apply_judge_labels(groups, build_judge(args.judge))
    if args.mode == "random":
        records, stats = random_pairs(groups, args.seed, args.pairs_per_prompt)
    else:
        apply_parm_scores(groups, build_judge(args.parm))
        records, stats = parm_pairs(groups, args.pairs_per_prompt, args.min_weight)
    if not records:
        raise SystemExit(f"no pairs: {stats}; generate more images per prompt (run.eval_num)")
    write_pairs(args.out, records)
    print(json.dumps({"out": args.out, **vars(stats)}))


if __name__ == "__main__":
    main()
