"""The DPO objective (Rafailov et al. 2023) as the paper trains it (upstream training/train_dpo.py).

    loss_i = -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))

with ``pi_*``/``ref_*`` the log-likelihoods of the chosen and rejected images under the policy and
the frozen reference (``dpo.likelihood``). Upstream: beta 0.1, ``dpo_coef`` 1, ``sft_coef`` 0
(scripts/dpo.yaml). Two additions, both off by default:

- per-pair ``weights`` (``dpo.guidance``): the loss is ``sum_i w_i * loss_i / sum_i w_i``, so the
  weights change which pairs the gradient follows but not its overall scale;
- an SFT term ``sft_coef * mean_i(-pi_c_i / n_c_i)``: the per-token negative log-likelihood of the
  chosen image (``n_c`` = scored tokens), the usual guard against DPO lowering both likelihoods.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class DPOOutput:
    loss: torch.Tensor
    """Scalar to backpropagate."""
    pair_losses: torch.Tensor
    """``float [B]``: ``-log sigmoid(beta * margin)`` of each pair (unweighted)."""
    chosen_rewards: torch.Tensor
    """``float [B]``: implicit reward ``beta * (pi_c - ref_c)``, detached."""
    rejected_rewards: torch.Tensor
    """``float [B]``: ``beta * (pi_r - ref_r)``, detached."""

    @property
    def accuracy(self) -> float:
        """Fraction of pairs whose chosen image has the larger implicit reward."""
        return (self.chosen_rewards > self.rejected_rewards).float().mean().item()

    @property
    def margin(self) -> float:
        return (self.chosen_rewards - self.rejected_rewards).mean().item()


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1, weights: torch.Tensor | None = None,
             sft_coef: float = 0.0, chosen_counts: torch.Tensor | None = None,
             normaliser: float | None = None) -> DPOOutput:
    """DPO loss of a batch of pairs; every log-likelihood is ``float [B]``.

    ``weights`` (``float [B]``, >= 0) reweight the pairs; ``sft_coef > 0`` needs ``chosen_counts``
    (``[B]``, the number of tokens each ``policy_chosen`` sums over). ``normaliser`` replaces the
    denominator ``sum(weights)`` (or ``B``): a data-parallel rank passes the global weight sum over
    the world size, so that averaging the ranks' gradients gives the global weighted mean.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}; upstream uses 0.1")
    ref_chosen, ref_rejected = ref_chosen.detach(), ref_rejected.detach()  # the reference is frozen
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    pair_losses = -F.logsigmoid(beta * margin)
    weights = torch.ones_like(pair_losses) if weights is None else weights.to(pair_losses)
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("pair weights must be >= 0 with a positive sum")
    loss = (weights * pair_losses).sum() / (weights.sum() if normaliser is None else normaliser)
    if sft_coef:
        if chosen_counts is None:
            raise ValueError("sft_coef > 0 needs chosen_counts (tokens scored per chosen image)")
        loss = loss + sft_coef * (-policy_chosen / chosen_counts.to(policy_chosen)).mean()
    return DPOOutput(loss, pair_losses.detach(), beta * (policy_chosen - ref_chosen).detach(),
                     beta * (policy_rejected - ref_rejected).detach())
