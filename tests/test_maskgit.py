"""Mask-predict decoding: schedule, temperature, guidance and one step, against hand-computed values."""
import math

import pytest
import torch

from generation.maskgit import (guided_logits, mask_length, maskgit_step, sample_codes, scheduled_mask_count,
                                step_temperature)


def test_mask_length_follows_cosine_schedule_and_show_o_clamp():
    unknown = torch.ones(2, 16, dtype=torch.bool)
    # step 0 of 4: floor(16 * cos(pi/2 * 1/4)) = floor(14.78) = 14
    assert mask_length(16, 0, 4, unknown).tolist() == [14, 14]
    # last step: cos(pi/2) ~ 0 -> clamped up to 1 (Show-o re-masks at least one token)
    assert mask_length(16, 3, 4, unknown).tolist() == [1, 1]
    # never more than unknown - 1
    few = torch.zeros(1, 16, dtype=torch.bool)
    few[0, :3] = True
    assert mask_length(16, 0, 4, few).tolist() == [2]


def test_mask_count_is_upstream_float32_cosine():
    # Literal values of Show-o's t2i_generate (models/modeling_showo.py L157-166, float32
    # torch.cos): at ratio 2/3, cos = 0.49999997 in float32, so 256 -> 127 and 16 -> 7, where
    # float64 math.cos (0.5000000000000001) would give 128 and 8.
    unknown = torch.ones(1, 256, dtype=torch.bool)
    assert mask_length(256, 11, 18, unknown).tolist() == [127]  # the paper's setting: 256 tokens, T = 18
    assert mask_length(16, 7, 12, torch.ones(1, 16, dtype=torch.bool)).tolist() == [7]
    assert mask_length(64, 7, 12, torch.ones(1, 64, dtype=torch.bool)).tolist() == [31]  # shapes world: 8x8, T = 12
    assert (scheduled_mask_count(256, 12, 18), scheduled_mask_count(16, 8, 12)) == (127, 7)
    # where float32 and float64 agree the values are unchanged
    assert [scheduled_mask_count(256, s, 18) for s in (1, 6, 9, 17)] == [255, 221, 181, 22]
    assert scheduled_mask_count(16, 12, 12) == -1  # float32 cos(pi/2) = -4.4e-8; mask_length clamps to 1
    assert mask_length(16, 11, 12, torch.ones(1, 16, dtype=torch.bool)).tolist() == [1]


def test_temperature_schedules():
    # showo compounds: t1 = 1 * (1 - 1/4), t2 = t1 * (1 - 2/4)
    t1 = step_temperature(1.0, 1.0, 0, 4, "showo")
    assert t1 == pytest.approx(0.75)
    assert step_temperature(1.0, t1, 1, 4, "showo") == pytest.approx(0.375)
    # maskgit does not: t0 * (1 - 2/4)
    assert step_temperature(4.5, 123.0, 1, 4, "maskgit") == pytest.approx(2.25)
    with pytest.raises(ValueError, match="temperature_schedule"):
        step_temperature(1.0, 1.0, 0, 4, "cosine")


def test_guidance_is_show_o_form():
    cond, uncond = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    assert guided_logits(cond, uncond, 1.75).tolist() == pytest.approx([2.75 * 2 - 1.75, -1.75])


def test_ties_at_the_cut_are_kept_as_show_o_does():
    # Show-o masks ``confidence < cut``: equal confidences at the cut stay unmasked.
    tokens = torch.full((1, 4), 7)
    logits = torch.zeros(1, 4, 7)
    new, _ = maskgit_step(logits, tokens, 7, step=0, num_steps=2, temperature=0.0,
                          generators=[torch.Generator().manual_seed(0)])
    assert (new == 7).sum() == 0


def test_sampling_is_per_row_reproducible_and_follows_the_distribution():
    logits = torch.log(torch.tensor([[[0.7, 0.2, 0.1]] * 4000]))
    draws = sample_codes(logits, [torch.Generator().manual_seed(0)])
    freq = torch.bincount(draws[0], minlength=3).float() / 4000
    assert freq.tolist() == pytest.approx([0.7, 0.2, 0.1], abs=0.03)
    a = sample_codes(logits[:, :5].repeat(2, 1, 1), [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])
    b = sample_codes(logits[:, :5], [torch.Generator().manual_seed(2)])
    assert torch.equal(a[1], b[0])


def test_step_keeps_committed_tokens_and_remasks_least_confident():
    mask_id = 9
    tokens = torch.tensor([[3, mask_id, mask_id, mask_id, mask_id]])
    # position 1 is certain of code 1, position 2 of code 2; positions 3, 4 are uniform
    logits = torch.full((1, 5, 9), -30.0)
    logits[0, 1, 1] = 30.0
    logits[0, 2, 2] = 30.0  # position 2 prefers code 2 with p ~ 0.88, less sure than position 1
    logits[0, 2, 3] = 28.0
    logits[0, 3:] = 0.0
    logits[0, 0, 5] = 30.0  # the committed position would pick 5, but keeps 3
    new, sampled = maskgit_step(logits, tokens, mask_id, step=0, num_steps=2, temperature=0.0,
                                generators=[torch.Generator().manual_seed(0)])
    # floor(5 * cos(pi/4)) = 3 re-masked (unknown - 1 = 3 allows it); with temperature 0 the three
    # least confident unknowns are the two uniform positions (p = 1/9) and position 2.
    assert sampled[0, 0] == 3 and sampled[0, 1] == 1 and sampled[0, 2] in (2, 3)
    assert new[0, 0] == 3
    assert (new[0, 3:] == mask_id).all()
    assert (new == mask_id).sum() == math.floor(5 * math.cos(math.pi / 4))
    assert new[0, 1] == 1 and new[0, 2] == mask_id
