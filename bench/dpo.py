"""DPO training throughput (pairs/s) on the shapes generator: shared-draw single forward vs separate forwards.

    python -m bench.dpo [--weights weights/shapes] [--batch-size 16] [--steps 20] [--repeats 3] [--order mask]

One training step = policy log-likelihoods of chosen and rejected (with gradients), the frozen
reference's (no gradients), the DPO loss, backward and an AdamW step. Two ways, same weights,
same pairs, interleaved in one process:
- ``shared``: chosen and rejected stacked into one ``2B``-row forward (possible because they share
  one mask and text-dropout draw, ``dpo.likelihood.pair_logprobs``), for the policy and the reference;
- ``separate``: one forward per image side and model (4 forwards), as upstream train_dpo.py does.
Prints pairs/s of each and their ratio (the figure to compare across machines). Falls back to a
random generator of the shipped size when ``--weights`` has none (the speed does not depend on values).
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from bench.generation import machine
from dpo.likelihood import TINY_SCORERS, draw_masks, pair_logprobs
from dpo.loss import dpo_loss
from dpo.train import TrainConfig, build_optimizer
from generation.tiny.model import TinyConfig, TinyT2I

PROMPT_LEN = 12


def load_policy(weights: str) -> TinyT2I:
    folder = Path(weights) / "generator"
    if (folder / "config.json").is_file():
        return TinyT2I.load(folder)
    print(f"no generator at {folder}: timing a random one of the shipped size")
    return TinyT2I(TinyConfig(text_vocab_size=35, hidden_size=192, num_layers=4, num_heads=6))


def step_shared(policy, reference, score, text, chosen, rejected, draw, optimizer) -> float:
    pc, pr, _, _ = pair_logprobs(score, policy, text, chosen, rejected, draw)
    with torch.no_grad():
        rc, rr, _, _ = pair_logprobs(score, reference, text, chosen, rejected, draw)
    return finish(dpo_loss(pc, pr, rc, rr).loss, optimizer)


def step_separate(policy, reference, score, text, chosen, rejected, draw, optimizer) -> float:
    pc, pr = score(policy, text, chosen, draw)[0], score(policy, text, rejected, draw)[0]
    with torch.no_grad():
        rc, rr = score(reference, text, chosen, draw)[0], score(reference, text, rejected, draw)[0]
    return finish(dpo_loss(pc, pr, rc, rr).loss, optimizer)


def finish(loss: torch.Tensor, optimizer) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def time_steps(step, policy, reference, score, batches, optimizer) -> float:
    start = time.perf_counter()
    for batch in batches:
        step(policy, reference, score, *batch, optimizer)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dpo", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="weights/shapes")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat and method")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--order", choices=sorted(TINY_SCORERS), default="mask")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    policy = load_policy(args.weights).to(args.device).train()
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    cfg = policy.cfg
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.steps):
        text = torch.randint(1, cfg.text_vocab_size, (args.batch_size, PROMPT_LEN), generator=gen)
        chosen, rejected = (torch.randint(0, cfg.codebook_size, (args.batch_size, cfg.num_image_tokens), generator=gen)
                            for _ in range(2))
        draw = draw_masks(args.batch_size, cfg.num_image_tokens, gen)
        batches.append(tuple(t.to(args.device) for t in (text, chosen, rejected)) + (draw.to(args.device),))
    optimizer = build_optimizer(policy, TrainConfig(pairs="", init="", out="", lr=1e-6))
    score = TINY_SCORERS[args.order]
    methods = {"shared": step_shared, "separate": step_separate}
    for step in methods.values():  # warm-up
        time_steps(step, policy, reference, score, batches[:2], optimizer)
    seconds = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, step in methods.items():
            seconds[name].append(time_steps(step, policy, reference, score, batches, optimizer))
    pairs = args.steps * args.batch_size
    rates = {name: pairs / min(times) for name, times in seconds.items()}
    print(f"machine: {machine()}")
    print(f"DPO step, {args.order} order, {args.batch_size} pairs/step, "
          f"{sum(p.numel() for p in policy.parameters()) / 1e6:.2f}M parameters (best of {args.repeats})")
    for name, rate in rates.items():
        print(f"  {name:9s} {rate:8.1f} pairs/s")
    print(f"  shared / separate: {rates['shared'] / rates['separate']:.2f}x")


if __name__ == "__main__":
    main()
