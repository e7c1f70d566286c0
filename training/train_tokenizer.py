"""Fit the shapes-world tokenizer and measure how well the detector reads its reconstructions.

    python -m training.train_tokenizer --out weights/shapes/tokenizer

Cells come from scenes of every composition the six prompt templates allow over the shapes
vocabulary. The tokenizer is an image codec that never sees text, so this is no prompt leak (as a
VQGAN trained on ImageNet is used for COCO prompts); the generator alone is held to the training
prompt pool. Fidelity is measured on fresh scenes (another seed) of the evaluation suite: the share of scenes whose
reconstruction the shapes detector reads exactly (same classes, colours and boxes), per tag.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from geneval.suites import SHAPES_SUITE_DIR, enumerate_records, load_metadata, shapes_vocabulary
from shapes.dataset import build_pairs
from shapes.detect import detect_image, scene_key
from shapes.patch_tokenizer import PatchTokenizer



def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` numpy -> uint8 ``[N, 3, H, W]`` tensor."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def reconstruction_fidelity(tokenizer: PatchTokenizer, records: list[dict], images: np.ndarray,
                            record_index: np.ndarray) -> dict:
    """Share of scenes read exactly on the reconstruction, overall and per tag, plus PSNR."""
    recon = tokenizer.decode_uint8(tokenizer.encode(to_tensor(images))).permute(0, 2, 3, 1).numpy()
    exact_by_tag: dict[str, list[bool]] = {}
    for original, rebuilt, index in zip(images, recon, record_index):
        exact = scene_key(detect_image(original)) == scene_key(detect_image(rebuilt))
        exact_by_tag.setdefault(records[index]["tag"], []).append(exact)
    mse = np.mean((recon.astype(np.float64) - images) ** 2)
    every = [e for values in exact_by_tag.values() for e in values]
    return {"exact_scene": float(np.mean(every)),
            "exact_by_tag": {t: float(np.mean(v)) for t, v in sorted(exact_by_tag.items())},
            "psnr_db": float(10 * np.log10(255 ** 2 / max(mse, 1e-10))),
            "num_scenes": len(every)}


def train(args: argparse.Namespace) -> dict:
    start = time.time()
    _, images = build_pairs(enumerate_records(shapes_vocabulary()), args.num_images, seed=args.seed, num_workers=args.workers)
    tokenizer = PatchTokenizer.fit(to_tensor(images), max_codes=args.max_codes, seed=args.seed)
    fit_seconds = time.time() - start
    eval_records = load_metadata(SHAPES_SUITE_DIR / "evaluation_metadata.jsonl")
    record_index, eval_images = build_pairs(eval_records, args.eval_scenes, seed=args.seed + 1)
    metrics = reconstruction_fidelity(tokenizer, eval_records, eval_images, record_index)
    metrics.update(fit_seconds=fit_seconds, codebook_size=tokenizer.cfg.codebook_size, args=vars(args))
    tokenizer.save(args.out)
    (Path(args.out) / "train_log.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="weights/shapes/tokenizer")
    parser.add_argument("--num-images", type=int, default=20_000, help="training scenes whose cells are clustered")
    parser.add_argument("--eval-scenes", type=int, default=2_000)
    parser.add_argument("--max-codes", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(train(parse_args(argv)), indent=1))


if __name__ == "__main__":
    main()
