"""A seeded subset of the shapes TRAINING prompt pool, written as a main.py prompt suite.

    python -m dpo.prompt_subset --num 200 --seed 0 --out work/prompts

Writes ``OUT/prompts.txt`` and ``OUT/metadata.jsonl`` (line N of one is line N of the other) from
``geneval/prompts/shapes/train_metadata.jsonl``, the pool disjoint from the evaluation suite: DPO
candidates are generated on these, never on the prompts GenEval scores. Tags are drawn evenly
(round-robin over the tags, each tag's prompts in a seeded order) so that small subsets still
cover every skill.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

from geneval.suites import SHAPES_SUITE_DIR, TRAIN_METADATA_FILE, load_metadata, write_metadata, write_prompts

TRAIN_POOL = SHAPES_SUITE_DIR / TRAIN_METADATA_FILE
PROMPTS_FILE, METADATA_FILE = "prompts.txt", "metadata.jsonl"


def balanced_subset(records: list[dict], num: int, seed: int) -> list[dict]:
    """``num`` distinct records, tags taken in turn, each tag's records in a seeded random order."""
    if num <= 0 or num > len(records):
        raise ValueError(f"--num must be in 1..{len(records)} (the pool size), got {num}")
    rng = random.Random(seed)
    by_tag: dict[str, list[dict]] = {}
    for record in records:
        by_tag.setdefault(record["tag"], []).append(record)
    queues = [rng.sample(group, len(group)) for _, group in sorted(by_tag.items())]
    chosen = []
    while len(chosen) < num:
        for queue in queues:
            if queue and len(chosen) < num:
                chosen.append(queue.pop())
    return chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dpo.prompt_subset", description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, required=True, help="prompts to draw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool", default=str(TRAIN_POOL), help="metadata pool to draw from")
    parser.add_argument("--out", required=True, help="folder for prompts.txt and metadata.jsonl")
    args = parser.parse_args(argv)
    records = balanced_subset(load_metadata(args.pool), args.num, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_prompts(out / PROMPTS_FILE, records)
    write_metadata(out / METADATA_FILE, records)
    print(f"wrote {len(records)} training-pool prompts to {out}")


if __name__ == "__main__":
    main()
