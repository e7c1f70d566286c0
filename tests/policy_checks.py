"""Shared check: every search policy runs on a backend (used by the tiny-model tests of each backend)."""
from __future__ import annotations

import torch

from config import Config, SearchConfig
from reward_models.verifiers import Reflection
from search import POLICIES, ImageRequest


class BrightnessJudge:
    """P(yes) = mean brightness for every question; reflects by flagging the first half of the tokens."""

    def __init__(self, num_tokens: int):
        self.num_tokens = num_tokens

    def yes_no_probs(self, images, questions):
        p_yes = images.float().mean((1, 2, 3)) / 255
        return p_yes, 1 - p_yes

    def reflect(self, images, prompts):
        mask = torch.arange(self.num_tokens) < self.num_tokens // 2
        return [Reflection("the first half is wrong", mask) for _ in prompts]


def check_policies(generator, num_tokens: int, names=("orm_zs", "prm", "parm", "parm++")) -> dict[str, list]:
    """Run each policy (N=3) on two requests; checks the common contract and returns the selections."""
    cfg = Config()
    cfg.run.search_num = 3
    cfg.search = SearchConfig()
    requests = [ImageRequest("a red cat", 0, 0), ImageRequest("two dogs", 1, 0)]
    out = {}
    for name in names:
        selections = POLICIES[name](cfg, "cpu", judge=BrightnessJudge(num_tokens))(generator, requests, 0)
        assert len(selections) == 2, name
        for selection in selections:
            size = generator.image_size
            assert selection.image.dtype == torch.uint8 and tuple(selection.image.shape) == (3, size, size), name
            assert [r["candidate"] for r in selection.candidates] == [0, 1, 2], name
            assert sum(r["chosen"] for r in selection.candidates) == 1, name
        out[name] = selections
    return out
