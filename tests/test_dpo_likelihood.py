"""dpo/likelihood.py: masked-token and sequence log-likelihoods against hand-computed values.

The Show-o and Janus cases reuse the tiny official-layout checkpoints of tests/showo_fixtures.py and
tests/test_janus.py.
"""
import math

import pytest
import torch

from dpo.likelihood import MaskDraw, draw_masks, draw_text_dropout, raster_backend_logprob, mask_ratio, \
    masked_token_logprob, pair_logprobs, showo_masked_logprob, showo_text_ids, tiny_masked_logprob, \
    tiny_raster_logprob
from generation.tiny.model import TinyT2I
from shapes.word_tokenizer import WordTokenizer
from janus_fixtures import make, make_tiny_janus
from showo_fixtures import checkpoint, make_generator  # noqa: F401  (checkpoint: the tiny Show-o fixture)

PROMPTS = ["a photo of a red circle", "a photo of two squares"]


@pytest.fixture(scope="module")
def tiny(tiny_weights):
    return TinyT2I.load(tiny_weights / "generator"), WordTokenizer.load(tiny_weights / "generator" / "text_vocab.json")


def flat_head(model: TinyT2I) -> TinyT2I:
    """Every logit 0: each code has probability 1/K at every position."""
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    return model


def test_masked_token_logprob_hand_computed():
    logits = torch.tensor([[[0.0, math.log(2), 0.0], [0.0, math.log(2), 0.0]]])  # probs 1/4, 1/2, 1/4
    codes = torch.tensor([[1, 0]])
    logp, count = masked_token_logprob(logits, codes, torch.tensor([[True, True]]))
    assert logp.item() == pytest.approx(math.log(1 / 2) + math.log(1 / 4)) and count.item() == 2
    logp, count = masked_token_logprob(logits, codes, torch.tensor([[False, True]]))
    assert logp.item() == pytest.approx(math.log(1 / 4)) and count.item() == 1


def test_cosine_schedule_and_mask_counts():
    assert mask_ratio(torch.tensor([0.0, 1 / 3, 1.0])).tolist() == pytest.approx([1.0, math.cos(math.pi / 6), 0.0],
                                                                                 abs=1e-6)
    assert mask_ratio(torch.tensor([1.0]), min_masking_rate=0.25).item() == 0.25
    draw = draw_masks(64, 10, torch.Generator().manual_seed(3), cond_dropout=0.0)
    t = torch.rand(64, generator=torch.Generator().manual_seed(3))  # the draw's first random numbers
    expected = (torch.cos(t * math.pi / 2) * 10).round().clamp(min=1)
    assert draw.masked.sum(1).tolist() == expected.tolist()
    assert not draw.drop_text.any()
    assert draw_masks(8, 10, torch.Generator(), cond_dropout=1.0).drop_text.all()
    assert draw_masks(8, 10, torch.Generator(), min_masking_rate=1.0).masked.all()


def test_text_dropout_rate_is_about_cond_dropout():
    drop = draw_text_dropout(20_000, torch.Generator().manual_seed(0), 0.1).drop_text
    assert drop.float().mean().item() == pytest.approx(0.1, abs=0.01)


def test_tiny_masked_logprob_of_a_flat_model_is_minus_n_log_k(tiny_weights, tiny):
    model = flat_head(TinyT2I.load(tiny_weights / "generator"))
    codes = torch.randint(0, model.cfg.codebook_size, (2, 64), generator=torch.Generator().manual_seed(0))
    masked = torch.zeros(2, 64, dtype=torch.bool)
    masked[0, :5], masked[1, 10:40] = True, True
    logp, count = tiny_masked_logprob(model, tiny[1].encode(PROMPTS), codes, MaskDraw(masked, torch.zeros(2, dtype=bool)))
    k = model.cfg.codebook_size
    assert count.tolist() == [5, 30]
    assert logp.tolist() == pytest.approx([-5 * math.log(k), -30 * math.log(k)], rel=1e-5)


def test_masked_inputs_are_hidden_and_dropped_text_is_padding(tiny):
    model, text_tokenizer = tiny
    codes = torch.randint(0, model.cfg.codebook_size, (1, 64), generator=torch.Generator().manual_seed(1))
    masked = torch.zeros(1, 64, dtype=torch.bool)
    masked[0, :32] = True
    keep = MaskDraw(masked, torch.tensor([False]))
    other = codes.clone()
    other[0, 40] = (codes[0, 40] + 1) % model.cfg.codebook_size  # a visible token changes the scores
    text = text_tokenizer.encode(PROMPTS[:1])
    with torch.no_grad():
        base = tiny_masked_logprob(model, text, codes, keep)[0]
        assert tiny_masked_logprob(model, text, other, keep)[0].item() != pytest.approx(base.item(), abs=1e-7)
        logits = model(text, torch.where(masked, model.cfg.mask_id, codes), "mask")
        direct = logits.log_softmax(-1).gather(-1, codes[..., None])[0, :32, 0].sum()
        assert base.item() == pytest.approx(direct.item(), rel=1e-6)
        dropped = MaskDraw(masked, torch.tensor([True]))
        a = tiny_masked_logprob(model, text, codes, dropped)[0]
        b = tiny_masked_logprob(model, text_tokenizer.encode(PROMPTS[1:]), codes, dropped)[0]
        c = tiny_masked_logprob(model, torch.zeros_like(text), codes, keep)[0]
    assert a.item() == b.item() == pytest.approx(c.item())


def test_raster_logprob_equals_step_by_step_decoding_probabilities(tiny):
    """The teacher-forced sum equals the chain rule through the KV-cache path generation uses."""
    model, text_tokenizer = tiny
    text = text_tokenizer.encode(PROMPTS)
    codes = torch.randint(0, model.cfg.codebook_size, (2, 64), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logp, count = tiny_raster_logprob(model, text, codes, MaskDraw(None, torch.zeros(2, dtype=bool)))
        logits, caches = model.raster_prefill(text)
        chain = torch.zeros(2)
        for slot in range(64):
            chain += logits.log_softmax(-1).gather(-1, codes[:, slot:slot + 1])[:, 0]
            if slot + 1 < 64:
                logits = model.raster_next(codes[:, slot], slot + 1, caches)
    assert count.tolist() == [64, 64]
    assert logp.tolist() == pytest.approx(chain.tolist(), rel=1e-5)


def test_pair_logprobs_share_one_draw_and_match_separate_calls(tiny):
    model, text_tokenizer = tiny
    gen = torch.Generator().manual_seed(4)
    text = text_tokenizer.encode(PROMPTS)
    chosen, rejected = (torch.randint(0, model.cfg.codebook_size, (2, 64), generator=gen) for _ in range(2))
    draw = draw_masks(2, 64, gen, cond_dropout=0.5)
    with torch.no_grad():
        lc, lr, nc, nr = pair_logprobs(tiny_masked_logprob, model, text, chosen, rejected, draw)
        same_c, same_r, _, _ = pair_logprobs(tiny_masked_logprob, model, text, chosen, chosen, draw)
        assert lc.tolist() == pytest.approx(tiny_masked_logprob(model, text, chosen, draw)[0].tolist(), rel=1e-5)
        assert lr.tolist() == pytest.approx(tiny_masked_logprob(model, text, rejected, draw)[0].tolist(), rel=1e-5)
    assert nc.tolist() == nr.tolist() == draw.masked.sum(1).tolist()
    assert same_c.tolist() == same_r.tolist()  # identical images under one draw: identical scores


# -- Show-o and Janus, on the tiny official-layout checkpoints of their backend tests ---------------
@pytest.fixture(scope="module")
def showo(checkpoint):
    return make_generator(checkpoint)


def test_showo_masked_logprob_flat_head_and_gradients(showo):
    gen = showo
    text = showo_text_ids(gen, ["a red cat", "two dogs"])
    codes = torch.randint(0, gen.spec.codebook_size, (2, gen.spec.num_vq_tokens), generator=torch.Generator().manual_seed(0))
    masked = torch.zeros_like(codes, dtype=torch.bool)
    masked[0, :3], masked[1, :7] = True, True
    keep = MaskDraw(masked, torch.tensor([False, False]))
    logp, count = showo_masked_logprob(gen, text, codes, keep)
    assert count.tolist() == [3, 7]
    logp.sum().backward()
    assert gen.model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    dropped = showo_masked_logprob(gen, text, codes, MaskDraw(masked, torch.tensor([True, True])))[0]
    empty = showo_masked_logprob(gen, gen.uncond_text.expand(2, -1), codes, keep)[0]
    assert dropped.tolist() == pytest.approx(empty.tolist(), rel=1e-6)
    head = gen.model.lm_head
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        flat = showo_masked_logprob(gen, text, codes, keep)[0]
    assert flat.tolist() == pytest.approx([-3 * math.log(16), -7 * math.log(16)], rel=1e-5)


def test_raster_backend_logprob_is_the_exact_sequence_likelihood(tmp_path):
    gen = make(make_tiny_janus(tmp_path / "janus"))
    tokens = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    logp, count = raster_backend_logprob(gen, ["a red cat", "a cup"], tokens)
    assert count.tolist() == [16, 16]
    assert logp.tolist() == pytest.approx(gen.sequence_logprob(["a red cat", "a cup"], tokens).tolist(), rel=1e-6)
    head = gen.model.model.generation_head
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()
    flat = raster_backend_logprob(gen, ["a red cat"], tokens[:1])[0]
    assert flat.item() == pytest.approx(-16 * math.log(64), rel=1e-5)
