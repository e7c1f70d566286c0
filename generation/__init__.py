"""Image generators behind one step-wise protocol (``generation.base.Generator``).

``GENERATORS`` maps a backend name to ``module:Class``; a backend is imported only when
chosen, so the shapes world never imports the large-model code paths.
"""
from __future__ import annotations

import importlib

import torch

from generation.config import GenerationConfig

GENERATORS = {
    "tiny": "generation.tiny.backend:TinyGenerator",
    "showo": "generation.showo:ShowoGenerator",
    "janus": "generation.janus:JanusGenerator",
    "llamagen": "generation.llamagen:LlamaGenGenerator",
}


def build_generator(cfg: GenerationConfig, device: torch.device | str = "cpu"):
    """The configured backend, constructed as ``Class(cfg, device)``."""
    if cfg.backend not in GENERATORS:
        raise ValueError(f"unknown generation.backend {cfg.backend!r}; valid: {sorted(GENERATORS)}")
    module, name = GENERATORS[cfg.backend].split(":")
    return getattr(importlib.import_module(module), name)(cfg, device)
