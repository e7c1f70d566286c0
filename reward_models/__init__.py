"""Reward models: yes/no judges behind one protocol (``reward_models.judge.YesNoJudge``).

``JUDGES`` maps ``reward.backend`` to ``module:Class``; a backend is imported only when chosen.
Every class is constructed as ``Class(cfg: JudgeConfig, device)``.
"""
from __future__ import annotations

import importlib

import torch

from reward_models.judge import KINDS, JudgeConfig, Question, YesNoJudge

__all__ = ["JUDGES", "KINDS", "JudgeConfig", "Question", "YesNoJudge", "build_judge"]

JUDGES = {
    "llava_onevision": "reward_models.llava_onevision:LlavaOnevisionJudge",
    "qwen2_vl": "reward_models.qwen_vl:QwenVLJudge",
    "qwen2_5_vl": "reward_models.qwen_vl:QwenVLJudge",
    "shapes": "reward_models.shapes_judge:ShapesJudge",
}


def build_judge(cfg: JudgeConfig, device: torch.device | str = "cpu") -> YesNoJudge:
    """The configured judge on ``cfg.device``, or on ``device`` (the generator's) when that is ``auto``."""
    if cfg.backend not in JUDGES:
        raise ValueError(f"unknown reward.backend {cfg.backend!r}; valid: {sorted(JUDGES)}")
    module, name = JUDGES[cfg.backend].split(":")
    return getattr(importlib.import_module(module), name)(cfg, device if cfg.device == "auto" else cfg.device)
