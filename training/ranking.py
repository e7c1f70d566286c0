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


def auc(scores: torch.Tensor, labels: torch.Tensor) -> dict:
    """Area under the ROC curve of ``scores`` for ``labels`` (ties half), with Hanley and McNeil's (1982)
    standard error."""
    good, bad = scores[labels].double(), scores[~labels].double()
    if not len(good) or not len(bad):
        return {"auc": float("nan"), "se": float("nan"), "positives": len(good), "negatives": len(bad)}
    a = float(((good[:, None] > bad[None]).double().mean() + 0.5 * (good[:, None] == bad[None]).double().mean()))
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    n1, n0 = len(good), len(bad)
    var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)
    return {"auc": a, "se": max(var, 0.0) ** 0.5, "positives": n1, "negatives": n0}


def binomial(hits: torch.Tensor) -> dict:
    """Share of true values and its binomial standard error."""
    n, rate = len(hits), float(hits.float().mean()) if len(hits) else float("nan")
    return {"accuracy": rate, "se": (rate * (1 - rate) / n) ** 0.5 if n else float("nan"), "n": n}
