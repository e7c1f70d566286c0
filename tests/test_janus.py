"""The Janus-Pro backend (generation/janus.py) on a tiny random Janus, checked against transformers' generate().

The tiny model is a JanusConfig scaled down (4x4 code grid, 8x8 pixels)
with larger random weights so that its codes vary, plus a character-level tokenizer; both are saved
with save_pretrained and loaded through the backend's real loader.
"""

import pytest
import torch
from transformers.generation.logits_process import ClassifierFreeGuidanceLogitsProcessor

from config import load_config
from generation.base import run_to_end
from generation.janus import to_uint8
from generation.maskgit import guided_logits
from janus_fixtures import BOI, BOS, generators, make, PAD, PROMPTS, SAME_LENGTH, weights


def run_recording(gen, prompts, monkeypatch):
    """Our tokens plus the processed logits of every sampled slot, ``[N, B, K]``."""
    seen, processed = [], gen.processed_logits
    monkeypatch.setattr(gen, "processed_logits", lambda c, u: seen.append(processed(c, u)) or seen[-1])
    canvas = gen.start(prompts, generators(len(prompts)))
    while canvas.step_index < gen.num_steps:
        canvas = gen.step(canvas)
    return canvas.tokens, torch.stack(seen)


def test_prompts_use_the_janus_image_format(weights):
    gen = make(weights)
    ids, mask = gen.encode_prompts(["a cup", "a red cat"])
    expected = gen.tokenizer("<|User|>: a red cat\n\n<|Assistant|>:<begin_of_image>")["input_ids"]
    assert ids[1].tolist() == expected and expected[0] == BOS and expected[-1] == BOI
    assert expected[1:3] == [gen.tokenizer.convert_tokens_to_ids("<|User|>"), gen.tokenizer.convert_tokens_to_ids(":")]
    assert ids[0].tolist() == [PAD] * 4 + gen.tokenizer("<|User|>: a cup\n\n<|Assistant|>:<begin_of_image>")["input_ids"]
    assert mask.tolist() == [[0] * 4 + [1] * 14, [1] * 18]
    uncond = gen._unconditional(ids)
    assert uncond[1].tolist() == [BOS] + [PAD] * 16 + [BOI]


def test_guidance_scale_maps_to_janus_scale(weights):
    gen = make(weights, guidance_scale=4.0)
    assert gen.janus_guidance == 5.0  # Janus-Pro's default
    cond, uncond = torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 1.0]])
    assert gen.guided_logits(cond, uncond).tolist() == [[6.0, -9.0]]  # 1 + 5*(2-1), 1 + 5*(-1-1)
    assert torch.equal(gen.guided_logits(cond, uncond), guided_logits(cond, uncond, 4.0))  # Show-o's form


def test_greedy_is_token_identical_to_generate_with_guidance(weights, monkeypatch):
    gen = make(weights, temperature=0.0)
    ours, our_scores = run_recording(gen, SAME_LENGTH, monkeypatch)
    assert gen.num_forwards == 2 * 16  # prefill + 15 single-code forwards per candidate

    scores, call = [], ClassifierFreeGuidanceLogitsProcessor.__call__
    monkeypatch.setattr(ClassifierFreeGuidanceLogitsProcessor, "__call__",
                        lambda self, ids, s: scores.append(call(self, ids, s)) or scores[-1])
    ids, mask = gen.encode_prompts(SAME_LENGTH)
    theirs = gen.model.generate(ids, attention_mask=mask, generation_mode="image", do_sample=False,
                                guidance_scale=gen.janus_guidance)
    assert torch.equal(ours, theirs)
    assert len(set(ours.flatten().tolist())) > 4  # the tiny model does not collapse to one code
    torch.testing.assert_close(our_scores, torch.stack(scores), rtol=1e-4, atol=1e-4)


def test_sampling_follows_generates_distribution_at_every_step(weights, monkeypatch):
    """generate() draws with torch.multinomial on the global RNG; we make it take our draws and
    compare the distributions it would have sampled from, slot by slot along the same path."""
    gen = make(weights, temperature=0.7, top_k=10)
    ours, our_logits = run_recording(gen, SAME_LENGTH, monkeypatch)
    probs, draws = [], iter(ours.T)
    monkeypatch.setattr(torch, "multinomial", lambda p, num_samples: probs.append(p) or next(draws)[:, None])
    ids, mask = gen.encode_prompts(SAME_LENGTH)
    theirs = gen.model.generate(ids, attention_mask=mask, generation_mode="image", do_sample=True,
                                guidance_scale=gen.janus_guidance, temperature=0.7, top_k=10, top_p=1.0)
    assert torch.equal(ours, theirs) and len(probs) == 16
    torch.testing.assert_close(our_logits.softmax(-1), torch.stack(probs), rtol=1e-4, atol=1e-5)
    kept = torch.isfinite(our_logits)
    assert (kept.sum(-1) == 10).all()
    assert kept.gather(-1, ours.T[..., None]).all()  # every draw is inside the top 10


def test_gumbel_draws_follow_the_processed_distribution(weights):
    gen = make(weights, temperature=0.5, top_k=3)
    cond, uncond = torch.tensor([[1.0, 0.8, 0.5, 0.2, 2.0]]), torch.zeros(1, 5)
    n = 3000
    codes = gen.sample(cond.expand(n, -1), uncond.expand(n, -1), [torch.Generator().manual_seed(i) for i in range(n)])
    logits = torch.tensor([1.0, 0.8, 0.5, 0.2, 2.0]) * 2.5 / 0.5  # guidance 2.5, temperature 0.5
    expected = torch.zeros(5).index_put_((torch.tensor([0, 1, 4]),), logits[[0, 1, 4]].softmax(-1))
    frequencies = torch.bincount(codes, minlength=5).float() / n
    assert frequencies[2] == 0 and frequencies[3] == 0  # outside the top 3
    torch.testing.assert_close(frequencies, expected, atol=0.03, rtol=0)


def test_select_mid_way_continues_the_same_paths(weights):
    gen = make(weights, rows_per_step=1)
    full = run_to_end(gen, PROMPTS, generators(3))
    canvas = gen.step(gen.start(PROMPTS, generators(3)))
    pruned = canvas.select(torch.tensor([2, 0, 2]))  # drop row 1, duplicate row 2
    assert pruned.cache.layers[0].keys.shape[0] == 6  # both guidance halves of the kept rows
    while pruned.step_index < gen.num_steps:
        pruned = gen.step(pruned)
    assert torch.equal(gen.finish(pruned), full[[2, 0, 2]])


def test_a_candidate_does_not_depend_on_the_other_rows(weights):
    gen = make(weights)
    batched = run_to_end(gen, PROMPTS, generators(3))  # prompts of 3 lengths: left padding
    assert batched.shape == (3, 3, 8, 8) and batched.dtype == torch.uint8
    alone = torch.cat([run_to_end(gen, [p], [g]) for p, g in zip(PROMPTS, generators(3))])
    assert torch.equal(batched, alone)
    assert not torch.equal(batched, run_to_end(gen, PROMPTS, generators(3, sample=1)))


def test_previews_show_finished_rows_on_grey(weights):
    gen = make(weights, rows_per_step=2)
    assert (gen.num_steps, gen.image_size) == (2, 8)
    canvas = gen.start(PROMPTS[:2], generators(2))
    assert torch.equal(gen.preview(canvas), torch.full((2, 3, 8, 8), 128, dtype=torch.uint8))
    canvas = gen.step(canvas)
    assert (canvas.tokens[:, :8] >= 0).all() and (canvas.tokens[:, 8:] == -1).all()
    half = gen.preview(canvas)
    assert half.shape == (2, 3, 8, 8) and half.dtype == torch.uint8
    assert torch.equal(half[:, :, :4], gen.decode_rows(canvas.tokens[:, :8]))  # 2 code rows = 4 pixel rows
    assert (half[:, :, 4:] == 128).all()
    canvas = gen.step(canvas)
    assert torch.equal(gen.preview(canvas), gen.finish(canvas))  # the strip decode is the full decode


def test_uint8_conversion_truncates_like_janus():
    pixels = torch.tensor([-1.0, 0.0, 1.0, 2.0, -3.0, 0.999])
    assert to_uint8(pixels).tolist() == [0, 127, 255, 255, 0, 254]  # 127.5 -> 127, 254.87 -> 254


def forced_logprobs(gen, prompts, codes, monkeypatch):
    """By hand: run the sampling loop with its draws replaced by ``codes``, adding up log_softmax of the
    conditional and of the unconditional (guidance-row) generation-head logits at every slot."""
    cond_sum, uncond_sum, slot = torch.zeros(len(prompts)), torch.zeros(len(prompts)), iter(range(codes.shape[1]))

    def forced(cond, uncond, gens):
        j = next(slot)
        cond_sum.add_(cond.log_softmax(-1).gather(-1, codes[:, j: j + 1]).squeeze(-1))
        uncond_sum.add_(uncond.log_softmax(-1).gather(-1, codes[:, j: j + 1]).squeeze(-1))
        return codes[:, j]

    monkeypatch.setattr(gen, "sample", forced)
    canvas = gen.start(prompts, generators(len(prompts)))
    while canvas.step_index < gen.num_steps:
        canvas = gen.step(canvas)
    monkeypatch.undo()
    assert torch.equal(canvas.tokens, codes)
    return canvas.tokens, cond_sum, uncond_sum


def test_sequence_logprob_is_the_teacher_forced_sum_and_has_gradients(weights, monkeypatch):
    gen = make(weights, rows_per_step=4)
    prompts = PROMPTS[:2]  # different lengths
    codes = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(3))
    tokens, expected, _ = forced_logprobs(gen, prompts, codes, monkeypatch)
    total = gen.sequence_logprob(prompts, tokens)  # tokens made under inference_mode, as in DPO
    assert total.shape == (2,) and (total < 0).all()
    torch.testing.assert_close(total.detach(), expected, rtol=1e-4, atol=1e-4)

    total.sum().backward()
    assert gen.model.model.generation_head.vision_head.weight.grad.abs().sum() > 0
    assert gen.model.model.language_model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_dropped_text_is_scored_with_the_guidance_rows_prompt(weights, monkeypatch):
    gen = make(weights, rows_per_step=2)
    prompts = PROMPTS  # three lengths: left padding in both guidance halves
    codes = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(4))
    tokens, cond, uncond = forced_logprobs(gen, prompts, codes, monkeypatch)
    assert (cond - uncond).abs().min() > 1e-2  # the two prompts really score differently
    with torch.no_grad():
        plain = gen.sequence_logprob(prompts, tokens)
        dropped = gen.sequence_logprob(prompts, tokens, torch.tensor([True, False, True]))
        none = gen.sequence_logprob(prompts, tokens, torch.zeros(3, dtype=torch.bool))
    torch.testing.assert_close(plain, cond, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dropped, torch.stack([uncond[0], cond[1], uncond[2]]), rtol=1e-4, atol=1e-4)
    assert torch.equal(dropped[1], plain[1]) and torch.equal(none, plain)  # None = no row dropped


def test_encode_quantizes_through_the_vq_encoder(weights):
    gen = make(weights)
    codes = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(5))
    images = gen.decode(codes)
    encoded = gen.encode(images)
    assert encoded.shape == (3, 16) and encoded.dtype == torch.long
    assert ((encoded >= 0) & (encoded < 64)).all() and len(set(encoded.flatten().tolist())) > 1
    assert torch.equal(gen.encode(images), encoded)  # deterministic
    assert torch.equal(gen.encode(images[1:2]), encoded[1:2])  # a row does not depend on the others

    # The original quantizer compares unit vectors, so the codebook's row norms change nothing (decode
    # normalises too); transformers' quantizer uses raw rows and agrees once every row has unit length.
    vq = gen.model.model.vqmodel
    pixels = images.float() / 127.5 - 1
    with torch.no_grad():
        norms = torch.rand(64, 1, generator=torch.Generator().manual_seed(6)) * 3 + 0.1
        vq.quantize.embedding.weight.mul_(norms)
        assert torch.equal(gen.encode(images), encoded)
        assert (gen.decode(codes).int() - images.int()).abs().max() <= 1  # float rounding of the norms only
        assert not torch.equal(vq.encode(pixels).image_tokens.view(3, -1), encoded)  # raw-norm distances
        vq.quantize.embedding.weight.div_(vq.quantize.embedding.weight.norm(dim=-1, keepdim=True))
        theirs = vq.encode(pixels).image_tokens.view(3, -1)
    assert torch.equal(encoded, theirs)

    with pytest.raises(ValueError, match=r"uint8 \[B, 3, 8, 8\]"):
        gen.encode(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        gen.encode(images.float())


def test_errors_name_the_problem(weights, tmp_path):
    with pytest.raises(ValueError, match="hf download"):
        make(tmp_path / "missing")
    with pytest.raises(ValueError, match="hf download"):
        make("nobody-here/not-a-cached-model")
    with pytest.raises(ValueError, match="raster"):
        make(weights, order="mask")
    with pytest.raises(ValueError, match="rows_per_step"):
        make(weights, rows_per_step=3)
    with pytest.raises(ValueError, match="dtype"):
        make(weights, dtype="float8")
    gen = make(weights)
    with pytest.raises(ValueError, match="generators"):
        gen.start(PROMPTS, generators(2))


def test_janus_preset_loads():
    cfg = load_config("configs/janus.yaml")
    assert (cfg.generation.backend, cfg.generation.order, cfg.generation.weights) == \
        ("janus", "raster", "deepseek-community/Janus-Pro-1B")
    assert 1 + cfg.generation.guidance_scale == 5  # Janus-Pro's default CFG
    assert 24 % cfg.generation.rows_per_step == 0
    assert (cfg.run.eval_num, cfg.run.search_num, cfg.geneval.detector) == (4, 20, "hf")


def test_search_policies_run_on_janus(weights):
    from tests.policy_checks import check_lookahead, check_policies, check_scaling_policies

    gen = make(weights)
    check_policies(gen, 0, names=("orm_zs", "prm", "parm"))  # parm++: tests/test_refine_backends.py
    check_scaling_policies(gen, 0)
    check_lookahead(gen)
