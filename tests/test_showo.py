"""Show-o backend (generation/showo.py) against a plain rewrite of the published algorithm.

Tiny random checkpoints in the official layouts (Show-o ``config.json`` + ``pytorch_model.safetensors``
with ``showo.``-prefixed phi keys, a phi-1.5-style ``config.json`` + offline tokenizer under ``llm/``,
a MAGVIT-v2 folder) go through the real loaders; the sampled tokens must equal those of
``reference_t2i_generate``, Show-o's ``t2i_generate`` (upstream models/modeling_showo.py:107-184,
models/sampling.py) written out with the same per-row random draws as generation/maskgit.py.
"""
import json
import math

import pytest
import torch

from generation.showo import PromptIds, ShowoGenerator, attention_mask
from showo_fixtures import (checkpoint, CODEBOOK, EOI, EOS, make_generator, MASK_ID, NUM_TOKENS, OFFSET, PAD,
                            PHI_CONFIG, run, seeds, showo_config, SOI, T2I, TEXT_LEN, VOCAB)


@pytest.fixture(scope="module")
def generator(checkpoint) -> ShowoGenerator:
    return make_generator(checkpoint)


# -- reference: Show-o's algorithm, written plainly ------------------------------------------------
def reference_mask(seq: torch.Tensor) -> torch.Tensor:
    """create_attention_mask_predict_next(rm_pad_in_image=True), per row and position, upstream's values."""
    n, length = seq.shape
    allowed = torch.zeros(n, length, length, dtype=torch.bool)
    for b in range(n):
        row = seq[b].tolist()
        pads = [j for j, t in enumerate(row) if t == PAD]
        soi, eoi = row.index(SOI), row.index(EOI)
        for i in range(length):
            for j in range(length):
                if soi <= i <= eoi:
                    allowed[b, i, j] = j not in pads
                else:
                    allowed[b, i, j] = j <= i and not (pads and i > pads[-1] and j <= pads[-1])
    inverted = 1.0 - allowed.long()
    return inverted.masked_fill(inverted.bool(), torch.iinfo(torch.int64).min)[:, None]


def gumbel(u: torch.Tensor) -> torch.Tensor:
    """sampling.py gumbel_noise: -log(-log u), both logs clamped at 1e-20."""
    return -torch.log((-torch.log(u.clamp(min=1e-20))).clamp(min=1e-20))


def reference_t2i_generate(phi, cond_ids, uncond_ids, steps, guidance, temperature, generators):
    """Upstream t2i_generate; categorical draws as Gumbel-max on per-row uniforms (maskgit.py's order:
    per step and row, first [N, K] sampling noise, then [N] re-masking noise). Returns (codes, temperature)."""
    ids = cond_ids.clone()
    codes = torch.full((len(ids), NUM_TOKENS), MASK_ID)  # upstream input_ids_minus_lm_vocab_size
    mask = reference_mask(torch.cat([cond_ids, uncond_ids]))
    for step in range(steps):
        uncond = torch.cat([uncond_ids[:, :TEXT_LEN], ids[:, TEXT_LEN:]], dim=1)
        cond_logits, uncond_logits = phi(torch.cat([ids, uncond]), attention_mask=mask).logits.float().chunk(2)
        logits = (1 + guidance) * cond_logits - guidance * uncond_logits
        logits = logits[:, -(NUM_TOKENS + 1):-1, OFFSET:-1]
        probs = logits.softmax(-1)
        sampled = torch.stack([(logits[i].log_softmax(-1) + gumbel(torch.rand((NUM_TOKENS, CODEBOOK), generator=g)))
                               .argmax(-1) for i, g in enumerate(generators)])
        unknown = codes == MASK_ID
        sampled = torch.where(unknown, sampled, codes)
        ratio = 1.0 * (step + 1) / steps
        mask_ratio = torch.cos(torch.tensor(ratio) * math.pi * 0.5)  # sampling.py cosine_schedule, float32
        mask_len = (NUM_TOKENS * mask_ratio).floor().reshape(1, 1)
        mask_len = torch.maximum(torch.tensor([1]), torch.minimum(unknown.sum(-1, keepdim=True) - 1, mask_len))
        selected = probs.gather(-1, sampled[..., None]).squeeze(-1)
        selected = torch.where(unknown, selected, torch.finfo(selected.dtype).max)
        temperature = temperature * (1.0 - ratio)
        confidence = torch.stack([torch.log(selected[i].clamp(min=1e-20))
                                  + temperature * gumbel(torch.rand(NUM_TOKENS, generator=g))
                                  for i, g in enumerate(generators)])
        cut = confidence.sort(-1).values.gather(1, mask_len.long())
        masking = confidence < cut
        ids[:, -(NUM_TOKENS + 1):-1] = torch.where(masking, MASK_ID, sampled + OFFSET)
        codes = torch.where(masking, MASK_ID, sampled)
    return sampled, temperature


def prompt_ids(words: list[int], num_rows: int = 1) -> torch.Tensor:
    """Hand layout of t2i_gen_prompt: pads, <|t2i|>, bos, words, eos, <|soi|>, masks, <|eoi|>."""
    text = [T2I, EOS] + words + [EOS]
    row = [PAD] * (TEXT_LEN - len(text)) + text + [SOI] + [MASK_ID] * NUM_TOKENS + [EOI]
    return torch.tensor([row] * num_rows)


# -- tests -----------------------------------------------------------------------------------------
def test_prompt_layout_matches_t2i_gen_prompt(generator):
    assert generator.ids == PromptIds(pad=12, bos=0, eos=0, soi=13, eoi=14, t2i=17)
    text = generator._text_ids(["a red cat", ""])
    ids = generator.input_ids(text, torch.full((2, NUM_TOKENS), generator.mask_code))
    assert ids.shape == (2, TEXT_LEN + 1 + NUM_TOKENS + 1)
    # "a red cat" = [1, 4, 6]: 123 pads, <|t2i|>, bos, a, red, cat, eos, <|soi|>, 16 x <mask>, <|eoi|>
    assert ids[0].tolist() == [12] * 123 + [17, 0, 1, 4, 6, 0] + [13] + [38] * 16 + [14]
    assert ids[1].tolist() == [12] * 126 + [17, 0, 0] + [13] + [38] * 16 + [14]  # unconditional prompt
    codes = torch.arange(NUM_TOKENS)[None]
    assert generator.input_ids(text[:1], codes)[0, 130:146].tolist() == list(range(22, 38))  # code c -> 22 + c
    long = generator._text_ids([" ".join(["cat"] * 200)])[0].tolist()
    assert long == [17, 0] + [6] * 126 + [0]  # truncated to 128 then eos (no pads)


def test_attention_mask_hand_checked():
    ids = PromptIds(pad=9, bos=1, eos=1, soi=7, eoi=8, t2i=6)
    seq = torch.tensor([[9, 9, 6, 1, 3, 1, 7, 5, 5, 8],  # 2 pads, text, <|soi|>, 2 image, <|eoi|>
                        [6, 1, 3, 3, 1, 7, 5, 5, 5, 8]])  # no pads
    mask = attention_mask(seq, ids, torch.float32)
    assert mask.shape == (2, 1, 10, 10) and mask.dtype == torch.float32
    sees = (mask[:, 0] == 0)
    low = torch.finfo(torch.float32).min
    assert set(mask.unique().tolist()) == {0.0, low}
    r = sees[0]
    assert r[0].nonzero().flatten().tolist() == [0]  # pads are causal among themselves
    assert r[1].nonzero().flatten().tolist() == [0, 1]
    assert r[2].nonzero().flatten().tolist() == [2]  # text after the pads does not see them
    assert r[5].nonzero().flatten().tolist() == [2, 3, 4, 5]  # causal text
    for row in (6, 7, 9):  # <|soi|>, image, <|eoi|>: every non-pad position, both directions
        assert r[row].nonzero().flatten().tolist() == list(range(2, 10))
    r = sees[1]
    assert r[4].nonzero().flatten().tolist() == [0, 1, 2, 3, 4]
    assert r[7].all()


def test_attention_mask_equals_upstream_construction(generator):
    text = generator._text_ids(["two red cat and a blue dog", ""])
    ids = generator.input_ids(text, torch.randint(0, CODEBOOK, (2, NUM_TOKENS)))
    ours = attention_mask(ids, generator.ids, torch.float32) == 0
    assert torch.equal(ours, reference_mask(ids) == 0)


@pytest.mark.parametrize("prompts,seed_values", [(["a red cat"] * 3, (0, 1, 2)),
                                                 (["a red cat", "two blue dog", "a red cat"], (5, 6, 7))])
def test_tokens_identical_to_reference_loop(checkpoint, generator, prompts, seed_values):
    canvas = run(generator, prompts, seeds(*seed_values))
    words = {"a red cat": [1, 4, 6], "two blue dog": [8, 5, 7]}
    cond = torch.cat([prompt_ids(words[p]) for p in prompts])
    uncond = prompt_ids([], len(prompts))
    with torch.no_grad():
        expected, _ = reference_t2i_generate(checkpoint["phi"], cond, uncond, 4, 1.75, 1.0, seeds(*seed_values))
    assert torch.equal(canvas.sampled, expected)
    assert canvas.step_index == 4 and not (canvas.sampled == generator.mask_code).any()
    # last step re-masks >= 1 position (upstream's max(1, ...)); sampled fills every position
    assert ((canvas.tokens == generator.mask_code).sum(1) >= 1).all()
    # it is a real sample: rows with different seeds differ
    assert not torch.equal(canvas.sampled[0], canvas.sampled[1])


def test_twelve_steps_follow_upstream_float32_schedule(checkpoint):
    # T = 12 over 16 tokens: at step 7 upstream re-masks floor(16 * float32 cos(pi/3)) = 7, not 8.
    gen = make_generator(checkpoint, num_steps=12)
    canvas = gen.start(["a red cat"], seeds(2))
    for _ in range(8):
        canvas = gen.step(canvas)
    assert int((canvas.tokens == gen.mask_code).sum()) == 7
    for _ in range(4):
        canvas = gen.step(canvas)
    with torch.no_grad():
        expected, _ = reference_t2i_generate(checkpoint["phi"], prompt_ids([1, 4, 6]), prompt_ids([]), 12, 1.75, 1.0,
                                             seeds(2))
    assert torch.equal(canvas.sampled, expected)


def test_upstream_schedule_carries_temperature_across_two_images(checkpoint):
    gen = make_generator(checkpoint, temperature_schedule="upstream", temperature=2.0)
    first = run(gen, ["a red cat"] * 2, seeds(3, 4))
    second = run(gen, ["a red cat"] * 2, seeds(8, 9))
    cond, uncond = prompt_ids([1, 4, 6], 2), prompt_ids([], 2)
    with torch.no_grad():
        ref_first, t = reference_t2i_generate(checkpoint["phi"], cond, uncond, 4, 1.75, 2.0, seeds(3, 4))
        ref_second, t2 = reference_t2i_generate(checkpoint["phi"], cond, uncond, 4, 1.75, t, seeds(8, 9))
    assert torch.equal(first.sampled, ref_first) and torch.equal(second.sampled, ref_second)
    assert t == 0.0 and first.temperature == 0.0 and second.temperature == 0.0
    # another prompt starts again from the configured temperature (upstream resets per t2i_generate call)
    assert gen.start(["two blue dog"], seeds(0)).temperature == 2.0
    assert gen.start(["a red cat"], seeds(0)).temperature == 0.0
    with pytest.raises(ValueError, match="upstream"):
        gen.start(["a red cat", "two blue dog"], seeds(0, 1))


def test_select_duplicates_rows_and_their_random_streams(generator):
    canvas = generator.step(generator.start(["a red cat", "two blue dog"], seeds(0, 1)))
    picked = canvas.select(torch.tensor([1, 1, 0]))
    assert picked.prompts == ["two blue dog", "two blue dog", "a red cat"]
    assert torch.equal(picked.tokens[2], canvas.tokens[0]) and torch.equal(picked.text[0], canvas.text[1])
    after = generator.step(picked)
    assert torch.equal(after.sampled[0], after.sampled[1])  # same state, same stream


def test_preview_and_finish_decode_the_full_sample(checkpoint, generator):
    canvas = generator.start(["a red cat"], seeds(0))
    before = generator.preview(canvas)  # all-mask sample clamps to the last code, as upstream
    assert before.dtype == torch.uint8 and before.shape == (1, 3, 8, 8)
    assert torch.equal(before, generator.decode(torch.full((1, NUM_TOKENS), CODEBOOK - 1)))
    with pytest.raises(ValueError, match="ran 0 of 4"):
        generator.finish(canvas)
    canvas = generator.step(canvas)
    assert torch.equal(generator.preview(canvas), generator.decode(canvas.sampled))
    for _ in range(3):
        canvas = generator.step(canvas)
    images = generator.finish(canvas)
    with torch.no_grad():
        pixels = checkpoint["vq"].decode_codes(canvas.sampled)
    assert torch.equal(images, (((pixels + 1) / 2).clamp(0, 1) * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="already ran"):
        generator.step(canvas)
    assert generator.image_size == 8


def test_dpo_style_checkpoint_loads_to_the_same_model(checkpoint, generator):
    dpo = make_generator(checkpoint, weights="dpo")
    text = generator._text_ids(["a photo of the green dog"])
    ids = generator.input_ids(text, torch.randint(0, CODEBOOK, (1, NUM_TOKENS)))
    with torch.no_grad():
        assert torch.equal(dpo.image_logits(ids), generator.image_logits(ids))
        # and the code logits are upstream's full-vocabulary logits sliced to [llm_vocab + 10 : -1]
        full = checkpoint["phi"](ids, attention_mask=reference_mask(ids)).logits[:, -(NUM_TOKENS + 1):-1, OFFSET:-1]
    assert torch.allclose(generator.image_logits(ids), full, atol=1e-5)


def test_no_guidance_runs_conditional_rows_only(checkpoint):
    gen = make_generator(checkpoint, guidance_scale=0.0)
    canvas = run(gen, ["a red cat"], seeds(0))
    with torch.no_grad():  # guidance 0 gives the conditional logits: (1 + 0) * cond - 0 * uncond
        expected, _ = reference_t2i_generate(checkpoint["phi"], prompt_ids([1, 4, 6]), prompt_ids([]), 4, 0.0, 1.0,
                                             seeds(0))
    assert torch.equal(canvas.sampled, expected)
    assert gen.num_forwards == 4


def test_real_size_phi_has_the_show_o_checkpoint_keys():
    """showlab/show-o keys (upstream's diffusers ModelMixin checkpoint) minus ``showo.`` are exactly PhiForCausalLM's, at full size."""
    from transformers import PhiConfig, PhiForCausalLM

    real = {**PHI_CONFIG, "hidden_size": 2048, "intermediate_size": 8192, "num_attention_heads": 32,
            "num_hidden_layers": 24, "qk_layernorm": True, "vocab_size": 58498}
    with torch.device("meta"):
        state = PhiForCausalLM(PhiConfig(**real)).state_dict()
    layer = [f"self_attn.{m}.{p}" for m in ("q_proj", "k_proj", "v_proj", "dense", "q_layernorm", "k_layernorm")
             for p in ("weight", "bias")]
    layer += [f"mlp.{m}.{p}" for m in ("fc1", "fc2") for p in ("weight", "bias")]
    layer += ["input_layernorm.weight", "input_layernorm.bias"]
    expected = {"model.embed_tokens.weight", "model.final_layernorm.weight", "model.final_layernorm.bias",
                "lm_head.weight", "lm_head.bias"} | {f"model.layers.{i}.{k}" for i in range(24) for k in layer}
    assert set(state) == expected
    assert state["model.layers.0.self_attn.q_layernorm.weight"].shape == (64,)  # per head
    assert state["lm_head.bias"].shape == (58498,)
    # 1,448,176,770 fp32 parameters = 5.79 GB, the size of showlab/show-o's pytorch_model.safetensors
    assert sum(v.numel() for v in state.values()) == 1_448_176_770


def test_missing_or_bad_checkpoints_say_what_to_do(checkpoint, tmp_path):
    with pytest.raises(ValueError, match=r"hf download showlab/show-o.*configs/shapes.yaml"):
        make_generator(checkpoint, weights="no_such_folder/really")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps(showo_config(vocab_size=VOCAB + 1)))
    with pytest.raises(ValueError, match="vocab_size"):
        make_generator(checkpoint, weights=str(bad))
    with pytest.raises(ValueError, match="order=mask"):
        make_generator(checkpoint, order="raster")


def test_search_policies_run_on_showo(generator):
    from tests.policy_checks import check_lookahead, check_policies, check_scaling_policies

    check_policies(generator, 0, names=("orm_zs", "prm", "parm"))  # parm++: tests/test_refine_backends.py
    check_scaling_policies(generator, 0)
    check_lookahead(generator)
