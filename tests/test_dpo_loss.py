"""dpo/loss.py against the DPO formula written out by hand."""
import math

import pytest
import torch

from dpo.loss import dpo_loss


def reference_loss(pc, pr, rc, rr, beta):
    """-log sigmoid(beta * margin) in plain Python floats."""
    return [math.log1p(math.exp(-beta * ((a - c) - (b - d)))) for a, b, c, d in zip(pc, pr, rc, rr)]


def test_hand_computed_pair():
    # margin = (-10 - -11) - (-12 - -11) = 2; loss = log(1 + e^-0.2)
    out = dpo_loss(torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([-11.0]), torch.tensor([-11.0]), 0.1)
    assert out.loss.item() == pytest.approx(0.5981388693815918, abs=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(0.1) and out.rejected_rewards.item() == pytest.approx(-0.1)
    assert out.accuracy == 1.0


def test_matches_reference_formula_on_random_tensors():
    torch.manual_seed(0)
    pc, pr, rc, rr = (torch.randn(16, dtype=torch.float64) * 30 for _ in range(4))
    for beta in (0.1, 0.5, 2.0):
        out = dpo_loss(pc, pr, rc, rr, beta)
        expected = reference_loss(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist(), beta)
        assert out.pair_losses.tolist() == pytest.approx(expected, rel=1e-9)
        assert out.loss.item() == pytest.approx(sum(expected) / 16, rel=1e-9)


def test_gradient_is_the_analytic_one_and_the_reference_gets_none():
    pc, pr = torch.tensor([-5.0, -7.0], requires_grad=True), torch.tensor([-6.0, -4.0], requires_grad=True)
    rc, rr = torch.tensor([-5.5, -6.0], requires_grad=True), torch.tensor([-5.5, -6.0], requires_grad=True)
    beta = 0.3
    dpo_loss(pc, pr, rc, rr, beta).loss.backward()
    margins = [(-5 + 5.5) - (-6 + 5.5), (-7 + 6) - (-4 + 6)]
    expected = [-beta / (1 + math.exp(beta * m)) / 2 for m in margins]  # d/dm of -log sigmoid(b m), over B=2
    assert pc.grad.tolist() == pytest.approx(expected)
    assert pr.grad.tolist() == pytest.approx([-g for g in expected])
    assert rc.grad is None and rr.grad is None


def test_weights_and_normaliser():
    torch.manual_seed(1)
    pc, pr, rc, rr = (torch.randn(3) for _ in range(4))
    plain = dpo_loss(pc, pr, rc, rr).pair_losses
    weighted = dpo_loss(pc, pr, rc, rr, weights=torch.tensor([1.0, 3.0, 0.0]))
    assert weighted.loss.item() == pytest.approx((plain[0] + 3 * plain[1]).item() / 4)
    halved = dpo_loss(pc, pr, rc, rr, weights=torch.tensor([1.0, 3.0, 0.0]), normaliser=8.0)
    assert halved.loss.item() == pytest.approx((plain[0] + 3 * plain[1]).item() / 8)


def test_sft_term_adds_the_per_token_nll_of_the_chosen_image():
    pc, pr, rc, rr = torch.tensor([-20.0, -8.0]), torch.tensor([-9.0, -9.0]), torch.tensor([-20.0, -8.0]), \
        torch.tensor([-9.0, -9.0])
    out = dpo_loss(pc, pr, rc, rr, 0.1, sft_coef=0.5, chosen_counts=torch.tensor([10, 4]))
    assert out.loss.item() == pytest.approx(math.log(2) + 0.5 * (2.0 + 2.0) / 2)


def test_bad_settings_raise():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(x, x, x, x, beta=0)
    with pytest.raises(ValueError, match="chosen_counts"):
        dpo_loss(x, x, x, x, sft_coef=1.0)
    with pytest.raises(ValueError, match="weights"):
        dpo_loss(x, x, x, x, weights=torch.tensor([-1.0, 1.0]))
