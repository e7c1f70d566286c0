"""dpo/guidance.py: PARM-guided pair choice and weights, and that the guidance reaches the gradient."""
import pytest
import torch

from dpo.guidance import hard_negative_pairs, pair_weights, parm_confidence, upstream_reward_term
from dpo.likelihood import draw_masks, pair_logprobs, tiny_masked_logprob
from dpo.loss import dpo_loss
from generation.tiny.model import TinyT2I
from shapes.word_tokenizer import WordTokenizer


def test_hard_negatives_pair_the_best_yes_with_the_best_looking_no():
    yes, no = [0.2, 0.9, 0.5], [0.1, 0.7]
    assert hard_negative_pairs(yes, no, 1) == [(1, 1)]
    assert hard_negative_pairs(yes, no, 5) == [(1, 1), (2, 0)]


def test_weights_are_floored_confidences_with_mean_one():
    weights = pair_weights([0.8, 0.4, 0.01], min_weight=0.05)
    mean = (0.8 + 0.4 + 0.05) / 3
    assert weights == pytest.approx([0.8 / mean, 0.4 / mean, 0.05 / mean])
    assert pair_weights([]) == []
    assert parm_confidence(torch.tensor([0.3]), torch.tensor([0.1])).item() == pytest.approx(0.75)


def grads(model, loss):
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_upstream_term_leaves_the_gradient_unchanged_and_ours_changes_it(tiny_weights):
    torch.manual_seed(0)
    policy = TinyT2I.load(tiny_weights / "generator")
    with torch.no_grad():  # move the policy off the reference so the pairs have different margins
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    reference = TinyT2I.load(tiny_weights / "generator")
    text = WordTokenizer.load(tiny_weights / "generator" / "text_vocab.json").encode(
        ["a photo of a circle", "a photo of a blue square", "a photo of two crosses"])
    gen = torch.Generator().manual_seed(0)
    chosen, rejected = (torch.randint(0, policy.cfg.codebook_size, (3, 64), generator=gen) for _ in range(2))
    draw = draw_masks(3, 64, gen, cond_dropout=0.0)

    def losses(weights=None, rows=slice(None)):
        parts = pair_parts(policy, reference, text, chosen, rejected, draw)
        return dpo_loss(*[t[rows] for t in parts], 0.1, weights)

    plain = grads(policy, losses().loss)
    upstream = grads(policy, losses().loss + upstream_reward_term([0.9, 0.2, 0.6]))
    assert torch.equal(plain, upstream)  # a constant reward term: no training signal at all

    weights = torch.tensor(pair_weights([0.9, 0.2, 0.6]))
    guided = grads(policy, losses(weights).loss)
    assert (guided - plain).norm() > 1e-3 * plain.norm()
    # and it is exactly the weighted combination of the per-pair DPO gradients
    per_pair = [grads(policy, losses(rows=slice(i, i + 1)).loss) for i in range(3)]
    expected = sum(w * g for w, g in zip(weights.tolist(), per_pair)) / weights.sum()
    assert torch.allclose(guided, expected, rtol=1e-4, atol=1e-7)


def pair_parts(policy, reference, text, chosen, rejected, draw):
    pc, pr, _, _ = pair_logprobs(tiny_masked_logprob, policy, text, chosen, rejected, draw)
    with torch.no_grad():
        rc, rr, _, _ = pair_logprobs(tiny_masked_logprob, reference, text, chosen, rejected, draw)
    return pc, pr, rc, rr
