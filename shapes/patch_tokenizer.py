"""The shapes-world image tokenizer: a k-means patch codebook with one token per 8x8 cell.

Why k-means and not a learned VQ autoencoder: the shapes world snaps every object to the
8-pixel cell grid (``shapes.world``), so a cell always holds one fixed piece of one
shape in one colour; there are about 1,300 distinct cells. A codebook that holds each of
them reconstructs clean scenes exactly, which a small convolutional VQ-VAE trained for minutes
on 2 cores does not (it blurs small crosses and stars into diamonds and circles). Clustering
pixel patches is the tokenizer of Image GPT (Chen et al. 2020, k-means colour clusters); here
the clusters are whole cells. Training is weighted Lloyd k-means over the distinct training
cells, seeded; when the cells are fewer than the codebook they become the codebook exactly.

Train with ``python -m training.train_tokenizer``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


@dataclass
class VQConfig:
    image_size: int = 64
    patch_size: int = 8
    codebook_size: int = 2048

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid_size ** 2


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``[B, 3, H, W]`` -> ``[B, g*g, 3*patch*patch]`` non-overlapping patches, raster order."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)


def unpatchify(patches: torch.Tensor, patch: int) -> torch.Tensor:
    """Inverse of ``patchify`` for square grids."""
    b, n, _ = patches.shape
    g = int(round(n ** 0.5))
    x = patches.reshape(b, g, g, 3, patch, patch)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(b, 3, g * patch, g * patch)


def kmeans(points: torch.Tensor, weights: torch.Tensor, k: int, iterations: int,
           generator: torch.Generator) -> torch.Tensor:
    """Weighted Lloyd k-means with k-means++ seeding; all points when there are at most k."""
    if len(points) <= k:
        return points[weights.argsort(descending=True)].clone()
    centroids = points[weights.argmax()][None]
    for _ in range(k - 1):  # k-means++: the next seed is drawn in proportion to weight * distance^2
        distance = torch.cdist(points, centroids).min(1).values ** 2
        centroids = torch.cat([centroids, points[torch.multinomial(weights * distance, 1, generator=generator)]])
    for _ in range(iterations):
        assign = torch.cdist(points, centroids).argmin(1)
        totals = torch.zeros_like(centroids).index_add_(0, assign, points * weights[:, None])
        mass = torch.zeros(k).index_add_(0, assign, weights)
        centroids = torch.where(mass[:, None] > 0, totals / mass.clamp_min(1e-12)[:, None], centroids)
    return centroids


class PatchTokenizer(torch.nn.Module):
    """Encode: nearest codebook cell per 8x8 patch. Decode: paste the codebook cells."""

    def __init__(self, cfg: VQConfig, codebook: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        pixels = 3 * cfg.patch_size ** 2
        self.register_buffer("codebook", codebook if codebook is not None else torch.zeros(cfg.codebook_size, pixels))
        assert self.codebook.shape == (cfg.codebook_size, pixels)

    @classmethod
    def fit(cls, images: torch.Tensor, max_codes: int = 2048, iterations: int = 20, seed: int = 0,
            image_size: int = 64, patch_size: int = 8) -> "PatchTokenizer":
        """Cluster the distinct cells of uint8 ``[N, 3, H, W]`` images into at most ``max_codes`` codes."""
        cells = patchify(images, patch_size).reshape(-1, 3 * patch_size ** 2)
        distinct, counts = cells.unique(dim=0, return_counts=True)
        generator = torch.Generator().manual_seed(seed)
        codebook = kmeans(distinct.float(), counts.float(), max_codes, iterations, generator)
        cfg = VQConfig(image_size=image_size, patch_size=patch_size, codebook_size=len(codebook))
        return cls(cfg, codebook)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """Codes ``long [B, g*g]`` (raster order) of uint8 images ``[B, 3, H, W]``.

        Images go through in chunks: the distance matrix is ``[chunk, N, K]`` floats.
        """
        half_norms = 0.5 * (self.codebook ** 2).sum(-1)
        codes = []
        for start in range(0, len(images), chunk):
            patches = patchify(images[start:start + chunk].float(), self.cfg.patch_size)  # [b, N, P]
            # argmin |x - c|^2 = argmax (x.c - |c|^2 / 2)
            codes.append((patches @ self.codebook.T - half_norms).argmax(-1))
        return torch.cat(codes) if codes else torch.zeros(0, self.cfg.num_tokens, dtype=torch.long)

    @torch.no_grad()
    def decode_uint8(self, codes: torch.Tensor) -> torch.Tensor:
        """uint8 images ``[B, 3, H, W]`` from codes ``long [B, g*g]``."""
        patches = self.codebook[codes].round().clamp(0, 255).to(torch.uint8)
        return unpatchify(patches, self.cfg.patch_size)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({"codebook": self.codebook.contiguous()}, directory / "model.safetensors")
        (directory / "config.json").write_text(json.dumps(asdict(self.cfg), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> "PatchTokenizer":
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise ValueError(f"no tokenizer at {directory}; train it with `python -m training.train_tokenizer`")
        cfg = VQConfig(**json.loads((directory / "config.json").read_text()))
        return cls(cfg, load_file(directory / "model.safetensors")["codebook"]).eval()
