"""What best-of-N rests on: how often a judge ranks a correct candidate of a prompt above a wrong one."""
from __future__ import annotations

import torch


def within_prompt_ranking(scores: torch.Tensor, groups: torch.Tensor, labels: torch.Tensor) -> dict:
    """Share of (correct, wrong) pairs of one prompt where the correct one scores higher (ties half),
    with its standard error clustered by prompt.

    The pairs of one prompt share their images, so they are not independent: the estimate is the ratio
    ``sum_g W_g / sum_g P_g`` of per-prompt wins and pairs, and its standard error the ratio
    estimator's, ``sqrt(G / (G - 1) * sum_g (W_g - r P_g)^2) / sum_g P_g`` over the G prompts with pairs.
    """
    wins, pairs = [], []
    for group in groups.unique():
        rows = groups == group
        good, bad = scores[rows & labels], scores[rows & ~labels]
        if len(good) and len(bad):
            wins.append(float((good[:, None] > bad[None]).sum() + 0.5 * (good[:, None] == bad[None]).sum()))
            pairs.append(len(good) * len(bad))
    total = sum(pairs)
    if not total:
        return {"accuracy": float("nan"), "se": float("nan"), "pairs": 0, "prompts": 0}
    rate, g = sum(wins) / total, len(pairs)
    spread = sum((w - rate * n) ** 2 for w, n in zip(wins, pairs))
    se = (g / (g - 1) * spread) ** 0.5 / total if g > 1 else float("nan")
    return {"accuracy": rate, "se": se, "pairs": total, "prompts": g}
