"""PARM reward guidance for DPO that changes the gradient (the paper's "DPO + PARM guidance", Table 3).

Upstream (Image-Generation-CoT training/train_dpo.py, its PARM-guidance term) samples images under ``no_grad``,
scores them with the PARM, and adds ``-0.1 * log(clamp(P(yes)))`` to the loss as a plain tensor:
a constant, so its gradient is zero and "guided" DPO trains exactly like plain DPO.
``upstream_reward_term`` reproduces that term so a test can show it.

What we do instead, and why. The reward must reach the parameters, and the cheapest honest way
on a generator without an exact likelihood is through which pairs DPO sees and how much each
counts (a reward-weighted, on-policy DPO), not through a REINFORCE term on the masked-token
surrogate, whose variance at 64-256 tokens per image and small batches would swamp the signal:

1. On-policy pairs: the candidates are the current policy's own samples (the iterative round's
   images), so the preferences are about the policy's actual mistakes.
2. Chosen = the evaluator-"yes" image with the highest PARM ``P(yes)``: among correct images, the
   one the judge finds most clearly right (the label still comes from the evaluator, so the PARM
   cannot promote a wrong image to "chosen").
3. Rejected = the evaluator-"no" image with the highest PARM ``P(yes)``: the hard negative. A wrong
   image the judge rates highly is the mistake that best-of-N search with that judge cannot filter
   out at test time, and the one closest to the decision boundary, so it carries the most
   information per pair (hard-negative mining). With ``k`` pairs per prompt the i-th best "yes"
   goes with the i-th best "no".
4. Weight = the PARM's confidence in the chosen image, ``q = P(yes) / (P(yes) + P(no))``, floored at
   ``min_weight`` and normalised to mean 1 over the pair file: a pair whose best correct image
   still looks doubtful to the judge (a possible evaluator false positive, or a barely-correct
   image) pulls less. Normalising keeps the effective learning rate of plain DPO, so guided and
   plain runs differ in direction, not in step size. Weighting by the rejected image's score
   instead would undo step 3 (it down-weights exactly the hard negatives), so it is not used.

The loss is ``dpo.loss.dpo_loss(..., weights=w)``: ``sum_i w_i l_i / sum_i w_i``; its gradient is
the w-weighted combination of the per-pair DPO gradients, which differs from the plain one whenever
the weights are not all equal (tests/test_dpo_guidance.py).
"""
from __future__ import annotations

import torch

from reward_models.judge import Question


def parm_confidence(p_yes: torch.Tensor, p_no: torch.Tensor) -> torch.Tensor:
    """``P(yes) / (P(yes) + P(no))``: the judge's yes-probability among its two answers."""
    return p_yes / (p_yes + p_no).clamp(min=1e-12)


def judge_scores(judge, images: torch.Tensor, prompts: list[str], kind: str = "orm") -> torch.Tensor:
    """``float [B]``: ``parm_confidence`` of ``judge.yes_no_probs`` on one question per image.

    The PARM's final verdict is its ORM-style question on the finished image (paper section 3.2).
    """
    p_yes, p_no = judge.yes_no_probs(images, [Question(kind, prompt) for prompt in prompts])
    return parm_confidence(p_yes, p_no)


def hard_negative_pairs(yes_scores: list[float], no_scores: list[float], pairs: int = 1) -> list[tuple[int, int]]:
    """``(chosen index, rejected index)`` pairs of one prompt: i-th best "yes" with i-th best "no".

    Indices are into ``yes_scores`` and ``no_scores``; ties keep the earlier candidate first.
    """
    yes_order = sorted(range(len(yes_scores)), key=lambda i: -yes_scores[i])
    no_order = sorted(range(len(no_scores)), key=lambda i: -no_scores[i])
    return list(zip(yes_order, no_order))[:pairs]


def pair_weights(chosen_scores: list[float], min_weight: float = 0.05) -> list[float]:
    """Per-pair weights: the chosen image's judge confidence, floored, normalised to mean 1."""
    if not chosen_scores:
        return []
    floored = [max(score, min_weight) for score in chosen_scores]
    mean = sum(floored) / len(floored)
    return [w / mean for w in floored]


def upstream_reward_term(p_yes: list[float], coef: float = 0.1) -> torch.Tensor:
    """Upstream's guidance term, ``coef * mean(-log(clamp(p, 1e-7)))`` from a plain tensor: no gradient."""
    return coef * (-torch.tensor(p_yes).clamp(min=1e-7).log()).mean()
