"""Test-time selection policies: how the candidates of one image are generated and one is kept.

A policy turns a batch of image requests (prompt, prompt index, image index) into one final
image per request plus a trace record per candidate. It drives any backend through the
step-wise ``generation.base.Generator`` protocol and seeds candidate ``c`` of image ``s`` of
prompt ``p`` with ``seeded_generator(seed, p, s, c)``, so images do not depend on batching or on
the number of ranks. ``main.py`` picks a policy by ``run.reward_model`` from ``POLICIES``.

Only ``none`` (plain decoding, upstream's ``--reward_model ''``: baseline.py) exists so far;
the verifier policies (orm_zs, orm_ft, prm, parm, parm++) plug in as more entries.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from config import Config
from generation.base import Generator, run_to_end, seeded_generator


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    prompt_index: int
    """Global index of the prompt (line of the prompt file, 0-based)."""
    sample_index: int
    """Which of the prompt's ``run.eval_num`` images."""


@dataclass
class Selection:
    image: torch.Tensor
    """``uint8 [3, H, W]``: the kept image."""
    candidates: list[dict]
    """One record per candidate, each with at least ``candidate`` (its index c) and whatever the
    policy wants traced (``chosen``, scores, prune step); ``main.py`` adds prompt and seed."""


class Policy(Protocol):
    num_candidates: int
    """Generator rows one image needs (N for best-of-N): ``main.py`` sizes batches with it."""

    def __call__(self, generator: Generator, requests: list[ImageRequest], seed: int) -> list[Selection]:
        """One ``Selection`` per request, in order."""
        ...


class PlainDecoding:
    """``reward_model=none``: one candidate (index 0) per image, decoded to the end and kept."""

    num_candidates = 1

    def __init__(self, cfg: Config, device: torch.device):
        del cfg, device  # nothing to load; verifier policies build their reward models here

    def __call__(self, generator: Generator, requests: list[ImageRequest], seed: int) -> list[Selection]:
        generators = [seeded_generator(seed, r.prompt_index, r.sample_index, 0) for r in requests]
        images = run_to_end(generator, [r.prompt for r in requests], generators)  # uint8 [B, 3, H, W]
        return [Selection(image, [{"candidate": 0, "chosen": True}]) for image in images]


POLICIES: dict[str, type] = {"none": PlainDecoding}
"""``run.reward_model`` name -> policy class, constructed as ``cls(cfg, device)``."""


def build_policy(cfg: Config, device: torch.device) -> Policy:
    return POLICIES[check_policy_name(cfg.run.reward_model)](cfg, device)


def check_policy_name(name: str) -> str:
    if name not in POLICIES:
        raise ValueError(f"unknown --reward_model {name!r}; valid: {sorted(POLICIES)}")
    return name
