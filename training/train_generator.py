"""Train the embedded shapes-world generator (both decoding orders in one model).

    python -m training.train_generator --out weights/shapes/generator

Data: seeded scenes of the training prompt pool (evaluation prompts held out), tokenised with
the shipped tokenizer. Each step trains half the batch on Show-o's mask-predict objective
(cosine mask ratio, cross-entropy on masked codes) and half on next-code prediction in raster
order; captions are dropped 10% of the time so classifier-free guidance has an unconditional
model (Show-o ``cond_dropout_prob``). A killed run restarted with the same command resumes from
its last checkpoint and ends with the same weights.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from geneval.suites import SHAPES_SUITE_DIR, load_metadata
from shapes.dataset import build_pairs
from generation.tiny.model import TinyConfig, TinyT2I
from shapes.word_tokenizer import WordTokenizer
from shapes.patch_tokenizer import PatchTokenizer



def build_token_dataset(records: list[dict], tokenizer: PatchTokenizer, num_images: int, seed: int,
                        workers: int, chunk: int = 20_000) -> tuple[torch.Tensor, torch.Tensor]:
    """(record index ``long [N]``, codes ``long [N, 64]``) for ``num_images`` seeded scenes."""
    indices, codes = [], []
    for start in tqdm(range(0, num_images, chunk), desc="scenes", mininterval=10):
        index, images = build_pairs(records, min(chunk, num_images - start), seed, start=start, num_workers=workers)
        indices.append(torch.from_numpy(index).long())
        codes.append(tokenizer.encode(torch.from_numpy(images).permute(0, 3, 1, 2)))
    return torch.cat(indices), torch.cat(codes)


def mask_predict_loss(model: TinyT2I, text: torch.Tensor, codes: torch.Tensor,
                      generator: torch.Generator) -> torch.Tensor:
    """Cross-entropy on codes masked at a cosine-schedule ratio (MaskGIT; Show-o training)."""
    b, n = codes.shape
    ratio = torch.cos(torch.rand(b, generator=generator) * math.pi / 2)
    num_masked = (ratio * n).round().clamp(min=1)
    ranks = torch.rand(b, n, generator=generator).argsort(1).argsort(1)
    masked = ranks < num_masked[:, None]
    inputs = torch.where(masked, model.cfg.mask_id, codes)
    logits = model(text, inputs, "mask")
    return F.cross_entropy(logits[masked], codes[masked])


def raster_loss(model: TinyT2I, text: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Next-code cross-entropy in raster order (LlamaGen)."""
    boi = torch.full((len(codes), 1), model.cfg.boi_id, dtype=torch.long)
    logits = model(text, torch.cat([boi, codes[:, :-1]], 1), "raster")
    return F.cross_entropy(logits.flatten(0, 1), codes.flatten())


def learning_rate(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def save_checkpoint(path: Path, model, optimizer, step: int, generator: torch.Generator, log: list) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "rng": generator.get_state(), "log": log}, tmp)
    os.replace(tmp, path)


def train(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    records = load_metadata(SHAPES_SUITE_DIR / "train_metadata.jsonl")
    text_tokenizer = WordTokenizer.for_shapes_world()
    tokenizer = PatchTokenizer.load(args.tokenizer)
    record_index, codes = build_token_dataset(records, tokenizer, args.num_images, args.seed, args.workers)
    texts = text_tokenizer.encode([r["prompt"] for r in records])[record_index]  # [N, T]
    cfg = TinyConfig(text_vocab_size=len(text_tokenizer), codebook_size=tokenizer.cfg.codebook_size,
                     hidden_size=args.hidden_size, num_layers=args.num_layers, num_heads=args.num_heads)
    model = TinyT2I(cfg)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(args.seed)
    checkpoint, step, log = out / "checkpoint.pt", 0, []
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["rng"])
        step, log = state["step"], state["log"]
        print(f"resuming from step {step}")
    start, half = time.time(), args.batch_size // 2
    model.train()
    for step in tqdm(range(step, args.steps), initial=step, total=args.steps, desc="generator", mininterval=10):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args)
        batch = torch.randint(len(codes), (args.batch_size,), generator=generator)
        text = texts[batch].clone()
        text[torch.rand(len(batch), generator=generator) < args.cond_dropout] = text_tokenizer.pad_id
        loss_mask = mask_predict_loss(model, text[:half], codes[batch[:half]], generator)
        loss_raster = raster_loss(model, text[half:], codes[batch[half:]])
        loss = (loss_mask + loss_raster) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0 or step == args.steps - 1:
            log.append({"step": step, "mask_loss": loss_mask.item(), "raster_loss": loss_raster.item(),
                        "lr": learning_rate(step, args), "seconds": time.time() - start})
        if (step + 1) % args.checkpoint_every == 0:
            save_checkpoint(checkpoint, model, optimizer, step + 1, generator, log)
    model.eval()
    model.save(out)
    text_tokenizer.save(out / "text_vocab.json")
    summary = {"steps": args.steps, "args": vars(args), "log": log,
               "num_parameters": sum(p.numel() for p in model.parameters())}
    (out / "train_log.json").write_text(json.dumps(summary, indent=1) + "\n")
    checkpoint.unlink(missing_ok=True)
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="weights/shapes/generator")
    parser.add_argument("--tokenizer", default="weights/shapes/tokenizer")
    parser.add_argument("--num-images", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=2_400)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--cond-dropout", type=float, default=0.1)
    parser.add_argument("--hidden-size", type=int, default=192)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--num-heads", type=int, default=6)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    summary = train(args)
    print(json.dumps({k: v for k, v in summary.items() if k != "log"} | {"last": summary["log"][-1]}, indent=1))


if __name__ == "__main__":
    main()
