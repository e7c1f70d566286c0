"""Generation throughput of the embedded shapes generator, each optimisation against its baseline.

    python -m bench.generation [--weights weights/shapes] [--num-candidates 20] [--repeats 3]

Prints candidates/s for:
- mask-predict, N candidates of one prompt as one batch vs one candidate at a time;
- raster order with the KV cache (the backend) vs recomputing the whole sequence per token.
Both sides of each pair run in the same process on the same weights, interleaved; the ratio
is the figure to compare across machines.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from generation.base import run_to_end, seeded_generator
from generation.config import GenerationConfig
from generation.maskgit import guided_logits, gumbel, per_row_uniform
from generation.tiny.backend import TinyGenerator

PROMPT = "a photo of a red circle and a blue star"


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{model}, {torch.get_num_threads()} threads, {gpu}, torch {torch.__version__}, {platform.python_version()}"


def candidates(n: int) -> list[torch.Generator]:
    return [seeded_generator(0, 0, 0, c) for c in range(n)]


def batched(gen: TinyGenerator, n: int) -> None:
    run_to_end(gen, [PROMPT] * n, candidates(n))


def one_at_a_time(gen: TinyGenerator, n: int) -> None:
    for g in candidates(n):
        run_to_end(gen, [PROMPT], [g])


@torch.inference_mode()
def raster_without_cache(gen: TinyGenerator, n: int) -> None:
    """Raster decoding that re-runs the full sequence for every token (no KV cache)."""
    model, cfg = gen.model, gen.cfg
    text = gen._with_uncond(gen.text_tokenizer.encode([PROMPT] * n))
    generators = candidates(n)
    tokens = torch.zeros(n, model.cfg.num_image_tokens, dtype=torch.long)
    boi = torch.full((2 * n, 1), model.cfg.boi_id)
    for slot in range(model.cfg.num_image_tokens):
        inputs = torch.cat([boi, tokens[:, :slot].repeat(2, 1)], 1)
        logits = model(text, torch.nn.functional.pad(inputs, (0, model.cfg.num_image_tokens - slot - 1)), "raster")
        guided = guided_logits(logits[:n, slot], logits[n:, slot], cfg.guidance_scale).float()
        noise = gumbel(per_row_uniform((guided.shape[-1],), generators, guided.device))
        tokens[:, slot] = (guided.log_softmax(-1) + noise).argmax(-1)
    gen.decode(tokens)


def rate(fn, gen, n: int, repeats: int) -> float:
    fn(gen, min(n, 2))  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(gen, n)
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="weights/shapes")
    parser.add_argument("--num-candidates", type=int, default=20)
    parser.add_argument("--num-steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = args.num_candidates
    mask = TinyGenerator(GenerationConfig(backend="tiny", weights=args.weights, order="mask", num_steps=args.num_steps))
    raster = TinyGenerator(GenerationConfig(backend="tiny", weights=args.weights, order="raster"))
    print(f"machine: {machine()}")
    print(f"| workload (N={n}) | optimised cand/s | baseline cand/s | speed-up |")
    print("|---|---|---|---|")
    pairs = [("mask-predict: batched vs one at a time", mask, batched, one_at_a_time),
             ("raster: KV cache vs full recompute", raster, batched, raster_without_cache)]
    for name, gen, fast, slow in pairs:
        fast_rate, slow_rate = rate(fast, gen, n, args.repeats), rate(slow, gen, n, args.repeats)
        print(f"| {name} | {fast_rate:.1f} | {slow_rate:.1f} | {fast_rate / slow_rate:.1f}x |")


if __name__ == "__main__":
    main()
