"""The LlamaGen backend (generation/llamagen.py) on tiny random weights, against a plain re-implementation
of the published sampling algorithm (llamagen:autoregressive/sample/sample_t2i.py -> generate()).

The fixture writes the official layouts: a raw ``torch.save`` dict with a ``"model"`` entry whose keys
are spelled here by hand as gpt.py / vq_model.py name them (plus the ``steps``/``args`` entries of a
training checkpoint), and a tiny T5 encoder + character tokenizer saved with ``save_pretrained``.
Everything is loaded through the backend's real loader. The reference below computes the GPT from
the state dict with plain tensor ops (gpt.py's ``Transformer.forward`` without a KV cache, the full
sequence every step, generate()'s mask) and draws each code like ``torch.multinomial`` would but
from the candidate's own generator (Gumbel-max on ``log probs``), so both must agree token for token.
"""
import shutil

import pytest
import torch
import torch.nn.functional as F

from config import load_config
from generation.base import run_to_end
from generation.llamagen import attention_mask, infer_gpt_config, rope_table, to_uint8, top_k_top_p
from generation.llamagen_vq import VQConfig, VQDecoder, infer_vq_config
from generation.maskgit import gumbel, per_row_uniform
from llamagen_fixtures import (CAPTION, DIM, FFN, generators, gpt_shapes, GRID, HEAD_DIM, HEADS, KV_HEADS, LAYERS, make,
                               make_gpt_state, N, PROMPTS, run, TEXT, VOCAB, weights)


# -- reference: gpt.py + generate.py + sample_t2i.py, written out plainly ---------------------------
def reference_freqs(grid, n_elem, base, cls_token_num):
    """gpt.py ``precompute_freqs_cis_2d``."""
    half_dim = n_elem // 2
    freqs = 1.0 / (base ** (torch.arange(0, half_dim, 2)[: (half_dim // 2)].float() / half_dim))
    freqs = torch.outer(torch.arange(grid), freqs)
    grid_freqs = torch.concat([freqs[:, None, :].expand(-1, grid, -1), freqs[None, :, :].expand(grid, -1, -1)], -1)
    cache = torch.stack([torch.cos(grid_freqs), torch.sin(grid_freqs)], -1).flatten(0, 1)
    return torch.cat([torch.zeros(cls_token_num, n_elem // 2, 2), cache])


def reference_rotary(x, freqs):
    xs = x.float().reshape(*x.shape[:-1], -1, 2)
    f = freqs.view(1, xs.size(1), 1, xs.size(3), 2)
    out = torch.stack([xs[..., 0] * f[..., 0] - xs[..., 1] * f[..., 1],
                       xs[..., 1] * f[..., 0] + xs[..., 0] * f[..., 1]], -1)
    return out.flatten(3).type_as(x)


def reference_rmsnorm(x, weight):
    return (x.float() * torch.rsqrt(torch.mean(x.float() * x.float(), -1, keepdim=True) + 1e-5)).type_as(x) * weight


def reference_logits(s, cond, idx, mask):
    """gpt.py ``Transformer.forward`` over [caption; codes] with a [B, 1, L, L] bool mask: all logits."""
    caption = F.linear(F.gelu(F.linear(cond, s["cls_embedding.cap_proj.fc1.weight"]), approximate="tanh"),
                       s["cls_embedding.cap_proj.fc2.weight"])
    h = torch.cat([caption, F.embedding(idx, s["tok_embeddings.weight"])], 1)
    b, length, _ = h.shape
    freqs = reference_freqs(GRID, HEAD_DIM, 10000, TEXT)[:length]
    for i in range(LAYERS):
        p = f"layers.{i}."
        x = reference_rmsnorm(h, s[p + "attention_norm.weight"])
        q, k, v = F.linear(x, s[p + "attention.wqkv.weight"]).split([DIM, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM], -1)
        q = reference_rotary(q.view(b, length, HEADS, HEAD_DIM), freqs).transpose(1, 2)
        k = reference_rotary(k.view(b, length, KV_HEADS, HEAD_DIM), freqs).transpose(1, 2)
        v = v.view(b, length, KV_HEADS, HEAD_DIM).transpose(1, 2)
        k, v = k.repeat_interleave(HEADS // KV_HEADS, 1), v.repeat_interleave(HEADS // KV_HEADS, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, length, DIM)
        h = h + F.linear(out, s[p + "attention.wo.weight"])
        x = reference_rmsnorm(h, s[p + "ffn_norm.weight"])
        gate = F.silu(F.linear(x, s[p + "feed_forward.w1.weight"])) * F.linear(x, s[p + "feed_forward.w3.weight"])
        h = h + F.linear(gate, s[p + "feed_forward.w2.weight"])
    return F.linear(reference_rmsnorm(h, s["norm.weight"]), s["output.weight"]).float()


def reference_filter(logits, top_k, top_p):
    """generate.py ``top_k_top_p_filtering`` (in place, as there)."""
    if top_k > 0:
        top_k = min(max(top_k, 1), logits.size(-1))
        logits[logits < torch.topk(logits, top_k)[0][..., -1, None]] = -float("Inf")
    if top_p < 1.0:
        sorted_logits, sorted_indices = torch.sort(logits, descending=True)
        remove = torch.cumsum(F.softmax(sorted_logits, -1), -1) > top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = 0
        logits[remove.scatter(1, sorted_indices, remove)] = -float("Inf")
    return logits


def reference_sample_t2i(gen, prompts, gens, cfg_scale, temperature, top_k, top_p, cfg_interval, greedy=False):
    state = make_gpt_state()
    # sample_t2i.py: T5 features, then the "naive way to implement left-padding".
    batch = gen.text_tokenizer(prompts, max_length=TEXT, padding="max_length", truncation=True,
                               return_attention_mask=True, add_special_tokens=True, return_tensors="pt")
    with torch.no_grad():
        caption_embs = gen.text_encoder(input_ids=batch["input_ids"],
                                        attention_mask=batch["attention_mask"])["last_hidden_state"]
    emb_masks = batch["attention_mask"]
    new_emb_masks = torch.flip(emb_masks, dims=[-1])
    new_caption_embs = []
    for caption_emb, emb_mask in zip(caption_embs, emb_masks):
        valid_num = int(emb_mask.sum().item())
        new_caption_embs.append(torch.cat([caption_emb[valid_num:], caption_emb[:valid_num]]))
    c_indices = torch.stack(new_caption_embs) * new_emb_masks[:, :, None]
    # generate(): [cond; null] rows, causal mask times emb_masks, plus the diagonal.
    guided = cfg_scale > 1.0
    cond = torch.cat([c_indices, torch.zeros_like(c_indices) + state["cls_embedding.uncond_embedding"]]) \
        if guided else c_indices
    masks = torch.cat([new_emb_masks, new_emb_masks]) if guided else new_emb_masks
    causal = torch.tril(torch.ones(TEXT + N, TEXT + N, dtype=torch.bool)).repeat(len(cond), 1, 1)
    causal[:, :, :TEXT] = causal[:, :, :TEXT] * masks.unsqueeze(1)
    eye = torch.eye(TEXT + N)
    causal = (causal * (1 - eye) + eye).bool()
    seq = torch.zeros(len(prompts), 0, dtype=torch.long)
    for t in range(N):
        length = TEXT + t
        idx = torch.cat([seq, seq]) if guided else seq
        with torch.no_grad():
            logits = reference_logits(state, cond, idx, causal[:, None, :length, :length])[:, -1]
        if guided:
            cond_logits, uncond_logits = torch.split(logits, len(logits) // 2, dim=0)
            cfg_flag = not (cfg_interval > -1 and t - 1 > cfg_interval)  # decode_n_tokens: i = t - 1
            logits = uncond_logits + (cond_logits - uncond_logits) * cfg_scale if cfg_flag else cond_logits
        logits = logits / max(temperature, 1e-5)
        if top_k > 0 or top_p < 1.0:
            logits = reference_filter(logits, top_k, top_p)
        probs = F.softmax(logits, -1)
        if greedy:  # sample(..., sample_logits=False)
            code = torch.topk(probs, k=1, dim=-1)[1][:, 0]
        else:  # torch.multinomial(probs, 1), one draw per row from that row's generator
            code = (torch.log(probs) + gumbel(per_row_uniform((VOCAB,), gens, "cpu"))).argmax(-1)
        seq = torch.cat([seq, code[:, None]], 1)
    return seq


# -- checkpoint layout and model pieces -------------------------------------------------------------
def test_checkpoint_layout_is_gpt_py(weights):
    gen = make(weights)
    ours = {k: tuple(v.shape) for k, v in gen.model.state_dict().items()}
    assert ours == gpt_shapes()
    cfg = gen.model.cfg
    assert (cfg.dim, cfg.n_layer, cfg.n_head, cfg.n_kv_head, cfg.vocab_size, cfg.caption_dim, cfg.cls_token_num,
            cfg.ffn_dim, cfg.grid) == (DIM, LAYERS, HEADS, KV_HEADS, VOCAB, CAPTION, TEXT, FFN, GRID)
    torch.testing.assert_close(gen.model.cls_embedding.uncond_embedding,
                               make_gpt_state()["cls_embedding.uncond_embedding"], rtol=0, atol=0)
    assert (gen.vq.cfg.codebook_size, gen.vq.cfg.ch_mult, gen.vq.cfg.num_res_blocks) == (VOCAB, (1, 2), 1)
    assert (gen.grid, gen.patch, gen.image_size, gen.num_steps) == (4, 2, 8, 2)


def test_official_sizes_are_inferred_from_shapes():
    with torch.device("meta"):
        vq = VQDecoder(VQConfig()).state_dict()
    assert infer_vq_config(vq) == VQConfig()  # VQ-16: 16384 x 8 codebook, ch_mult 1,1,2,2,4
    assert "decoder.conv_blocks.4.res.2.conv2.weight" in vq and "decoder.conv_blocks.0.attn.2.proj_out.weight" in vq
    assert "decoder.conv_blocks.3.upsample.conv.weight" in vq and "decoder.conv_blocks.4.upsample.conv.weight" not in vq
    # GPT-XL (gpt.py: 36 layers, 20 heads, width 1280, SwiGLU 3456 = find_multiple(int(2*4*1280/3), 256)).
    xl = {"tok_embeddings.weight": torch.empty(16384, 1280, device="meta"),
          "layers.35.attention.wo.weight": torch.empty(1280, 1280, device="meta"),
          "layers.0.attention.wqkv.weight": torch.empty(3 * 1280, 1280, device="meta"),
          "layers.0.feed_forward.w1.weight": torch.empty(3456, 1280, device="meta"),
          "cls_embedding.cap_proj.fc1.weight": torch.empty(1280, 2048, device="meta"),
          "cls_embedding.uncond_embedding": torch.empty(120, 2048, device="meta")}
    cfg = infer_gpt_config(xl, 0, 16)
    assert (cfg.n_layer, cfg.n_head, cfg.n_kv_head, cfg.head_dim, cfg.cls_token_num, cfg.caption_dim) == \
        (36, 20, 20, 64, 120, 2048)


def test_rope_table_zeroes_text_and_turns_rows_then_columns():
    table = rope_table(grid=2, head_dim=8, base=10000.0, num_text=3)
    assert table.shape == (3 + 4, 4, 2)
    assert (table[:3] == 0).all()  # text positions: cos = sin = 0
    # head_dim 8: frequencies 1 and 1/100 per half; cell (row 1, column 0) is position 3 + 2.
    angles = torch.tensor([1.0, 0.01, 0.0, 0.0])
    torch.testing.assert_close(table[5], torch.stack([angles.cos(), angles.sin()], -1))
    angles = torch.tensor([0.0, 0.0, 1.0, 0.01])  # (row 0, column 1)
    torch.testing.assert_close(table[4], torch.stack([angles.cos(), angles.sin()], -1))
    torch.testing.assert_close(rope_table(4, 16, 10000.0, 12), reference_freqs(4, 16, 10000, 12))


def test_attention_mask_hides_padding_but_not_the_query_itself():
    text = torch.tensor([[False, True, True]])
    mask = attention_mask(text, 0, 5)
    assert mask[0].int().tolist() == [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 1, 1, 1, 0],
                                      [0, 1, 1, 1, 1]]
    assert attention_mask(text, 4, 5)[0].int().tolist() == [[0, 1, 1, 1, 1]]


def test_top_k_then_top_p_filter():
    logits = torch.log(torch.tensor([[0.5, 0.05, 0.3, 0.15]]))
    inf = float("-inf")
    assert top_k_top_p(logits, 3, 1.0).isinf().tolist() == [[False, True, False, False]]
    # top_p 0.7: sorted masses 0.5, 0.8 -> keep the first token past 0.7 (0.3), drop 0.15 and 0.05.
    assert top_k_top_p(logits, 0, 0.7).isinf().tolist() == [[False, True, False, True]]
    assert top_k_top_p(logits, 1, 1.0).tolist()[0][1:] == [inf, inf, inf]
    assert torch.equal(top_k_top_p(logits, 0, 1.0), logits)


def test_text_is_left_padded_like_sample_t2i(weights):
    gen = make(weights)
    features, mask = gen.encode_text(["A  Cup", "two dogs and a cup"])
    assert mask.tolist() == [[False] * 6 + [True] * 6, [True] * 12]  # "a cup" + </s> = 6 tokens
    ids = gen.text_tokenizer(["a cup"], return_tensors="pt")["input_ids"]
    assert ids[0, -1].item() == 1 and ids.shape[1] == 6
    with torch.no_grad():
        alone = gen.text_encoder(input_ids=ids).last_hidden_state[0]
    torch.testing.assert_close(features[0, 6:], alone, rtol=1e-5, atol=1e-5)
    assert (features[0, :6] == 0).all()


# -- parity with the published algorithm -------------------------------------------------------------
@pytest.mark.parametrize("settings", [
    dict(guidance_scale=6.5, temperature=1.0, top_k=0, options={}),  # cfg 7.5, as sample_t2i.py
    dict(guidance_scale=2.0, temperature=0.8, top_k=20, options=dict(top_p=0.9, cfg_interval=3)),
    dict(guidance_scale=0.0, temperature=1.0, top_k=0, options={}),  # cfg 1: no guidance rows
])
def test_sampling_is_token_identical_to_the_reference(weights, settings):
    settings = dict(settings)
    options = settings.pop("options")
    gen = make(weights, options, rows_per_step=1, **settings)
    ours = run(gen, PROMPTS, generators(3)).tokens
    theirs = reference_sample_t2i(gen, PROMPTS, generators(3), cfg_scale=1 + settings["guidance_scale"],
                                  temperature=settings["temperature"], top_k=settings["top_k"],
                                  top_p=options.get("top_p", 1.0), cfg_interval=options.get("cfg_interval", -1))
    assert torch.equal(ours, theirs)
    assert len(set(ours.flatten().tolist())) > 8  # the tiny model does not collapse to one code


def test_greedy_is_token_identical_to_the_reference(weights):
    gen = make(weights, temperature=0.0, guidance_scale=4.0)
    ours = run(gen, PROMPTS, generators(3)).tokens
    theirs = reference_sample_t2i(gen, PROMPTS, generators(3), 5.0, 1.0, 0, 1.0, -1, greedy=True)
    assert torch.equal(ours, theirs)
    assert gen.num_forwards == 3 * N  # per candidate: prefill + 15 single-code forwards
    assert len(set(ours.flatten().tolist())) > 4


def test_guidance_and_interval(weights):
    gen = make(weights, guidance_scale=6.5, options=dict(cfg_interval=0))
    assert gen.cfg_scale == 7.5 and gen.halves == 2
    logits = torch.tensor([[2.0, -1.0], [1.0, 1.0]])  # rows: cond, uncond
    assert gen.guided_logits(logits, 0).tolist() == [[8.5, -14.0]]  # 1 + 7.5*(2-1), 1 + 7.5*(-1-1)
    assert gen.guided_logits(logits, 1).tolist() == [[8.5, -14.0]]  # decode i = 0 is still guided
    assert gen.guided_logits(logits, 2).tolist() == [[2.0, -1.0]]  # i = 1 > cfg_interval: conditional


def test_integer_decisions_match_upstream_literally(weights):
    # Every integer LlamaGen decides is exact arithmetic, as in upstream: generate.py's
    # decode_n_tokens (L111-114) compares the int i with the int cfg_interval (sample_t2i.py passes
    # none, so -1; our config rejects floats), generate() (L128, L138) guides iff the float
    # cfg_scale > 1.0, and a step is rows_per_step whole rows (no float enters a block boundary).
    gen = make(weights, options=dict(cfg_interval=3))
    logits = torch.tensor([[2.0, -1.0], [1.0, 1.0]])
    guided = [slot for slot in range(16) if gen.guided_logits(logits, slot).tolist() != [[2.0, -1.0]]]
    assert guided == [0, 1, 2, 3, 4]  # prefill's token 0, then decode i = 0..3 (tokens 1..4)
    assert make(weights, guidance_scale=1e-17).halves == 1  # 1 + 1e-17 == 1.0: generate() does not guide
    assert make(weights, guidance_scale=1e-15).halves == 2
    gen = make(weights, rows_per_step=1)  # 4x4 grid: step k writes slots 4k .. 4k+3
    canvas = gen.step(gen.step(gen.start(PROMPTS[:1], generators(1))))
    assert ((canvas.tokens >= 0).nonzero()[:, 1]).tolist() == list(range(8))


# -- the protocol ----------------------------------------------------------------------------------
def test_select_mid_way_continues_the_same_paths(weights):
    gen = make(weights, rows_per_step=1)
    full = run_to_end(gen, PROMPTS, generators(3))
    canvas = gen.step(gen.start(PROMPTS, generators(3)))
    pruned = canvas.select(torch.tensor([2, 0, 2]))  # drop row 1, duplicate row 2
    assert pruned.cache.keys[0].shape[0] == 6 and pruned.text_mask.shape == (6, TEXT)
    while pruned.step_index < gen.num_steps:
        pruned = gen.step(pruned)
    assert torch.equal(gen.finish(pruned), full[[2, 0, 2]])


def test_a_candidate_does_not_depend_on_the_other_rows(weights):
    gen = make(weights)
    batched = run_to_end(gen, PROMPTS, generators(3))
    assert batched.shape == (3, 3, 8, 8) and batched.dtype == torch.uint8
    alone = torch.cat([run_to_end(gen, [p], [g]) for p, g in zip(PROMPTS, generators(3))])
    assert torch.equal(batched, alone)
    assert not torch.equal(batched, run_to_end(gen, PROMPTS, generators(3, sample=1)))


def test_previews_show_finished_rows_on_grey(weights):
    gen = make(weights, rows_per_step=2)
    canvas = gen.start(PROMPTS[:2], generators(2))
    assert torch.equal(gen.preview(canvas), torch.full((2, 3, 8, 8), 128, dtype=torch.uint8))
    canvas = gen.step(canvas)
    assert (canvas.tokens[:, :8] >= 0).all() and (canvas.tokens[:, 8:] == -1).all()
    half = gen.preview(canvas)
    assert torch.equal(half[:, :, :4], gen.decode_rows(canvas.tokens[:, :8]))  # 2 code rows = 4 pixel rows
    assert (half[:, :, 4:] == 128).all()
    canvas = gen.step(canvas)
    assert torch.equal(gen.preview(canvas), gen.finish(canvas))
    with pytest.raises(ValueError, match="already ran"):
        gen.step(canvas)


def test_restart_replays_the_kept_rows_and_decodes_the_rest_again(weights):
    gen = make(weights, rows_per_step=1)  # a step is one row of 4 codes
    first = gen.step(gen.step(gen.start(PROMPTS, generators(3))))
    done = run(gen, PROMPTS, generators(3))
    flagged = torch.zeros(3, N, dtype=torch.bool)
    flagged[0, 9] = flagged[1, 15] = flagged[2, 10] = True  # earliest: code 9, in row 2 -> resume at step 2
    canvas = gen.restart(PROMPTS, done.tokens, flagged, generators(3, sample=1))
    assert canvas.step_index == 2 and torch.equal(canvas.tokens[:, :8], done.tokens[:, :8])
    assert (canvas.tokens[:, 8:] == -1).all()
    torch.testing.assert_close(canvas.next_logits, first.next_logits)  # the same cache state as after 2 steps
    while canvas.step_index < gen.num_steps:
        canvas = gen.step(canvas)
    assert torch.equal(gen.final_tokens(canvas)[:, :8], done.tokens[:, :8])
    assert not torch.equal(canvas.tokens, done.tokens)
    with pytest.raises(ValueError, match="at least one"):
        gen.restart(PROMPTS, done.tokens, torch.zeros(3, N, dtype=torch.bool), generators(3))


def test_uint8_conversion_rounds_like_save_image():
    pixels = torch.tensor([-1.0, 0.0, 1.0, 2.0, -3.0, 0.99, 0.5])
    # (x+1)/2*255 + 0.5, truncated: 0.5, 128.0, 255.5, clamp, clamp, 254.2, 191.75
    assert to_uint8(pixels).tolist() == [0, 128, 255, 255, 0, 254, 191]


def forced_logprobs(gen, prompts, codes, monkeypatch):
    """By hand: run the guided sampling loop with its draws replaced by ``codes``, adding up log_softmax of
    the conditional rows' and of the guidance (null caption) rows' logits at every slot."""
    b = len(prompts)
    assert gen.halves == 2
    cond_sum, uncond_sum = torch.zeros(b), torch.zeros(b)

    def forced(logits, slot, gens):
        cond_sum.add_(logits[:b].log_softmax(-1).gather(-1, codes[:, slot: slot + 1]).squeeze(-1))
        uncond_sum.add_(logits[b:].log_softmax(-1).gather(-1, codes[:, slot: slot + 1]).squeeze(-1))
        return codes[:, slot]

    monkeypatch.setattr(gen, "sample", forced)
    canvas = run(gen, prompts, generators(b))
    monkeypatch.undo()
    assert torch.equal(canvas.tokens, codes)
    return canvas.tokens, cond_sum, uncond_sum


def test_sequence_logprob_is_the_teacher_forced_sum_and_has_gradients(weights, monkeypatch):
    gen = make(weights, guidance_scale=3.0, rows_per_step=4)
    prompts = PROMPTS[:2]
    codes = torch.randint(0, VOCAB, (2, N), generator=torch.Generator().manual_seed(3))
    tokens, expected, _ = forced_logprobs(gen, prompts, codes, monkeypatch)
    total = gen.sequence_logprob(prompts, tokens)  # tokens made under inference_mode, as in DPO
    assert total.shape == (2,) and (total < 0).all()
    torch.testing.assert_close(total.detach(), expected, rtol=1e-4, atol=1e-4)
    total.sum().backward()
    assert gen.model.output.weight.grad.abs().sum() > 0
    assert gen.model.cls_embedding.cap_proj.fc1.weight.grad.abs().sum() > 0


def test_dropped_text_is_scored_with_the_null_caption_of_the_guidance_rows(weights, monkeypatch):
    gen = make(weights, guidance_scale=3.0, rows_per_step=2)
    codes = torch.randint(0, VOCAB, (3, N), generator=torch.Generator().manual_seed(4))
    tokens, cond, uncond = forced_logprobs(gen, PROMPTS, codes, monkeypatch)  # three text masks
    assert (cond - uncond).abs().min() > 1e-2  # caption and null caption really score differently
    with torch.no_grad():
        plain = gen.sequence_logprob(PROMPTS, tokens)
        dropped = gen.sequence_logprob(PROMPTS, tokens, torch.tensor([False, True, True]))
        none = gen.sequence_logprob(PROMPTS, tokens, torch.zeros(3, dtype=torch.bool))
    torch.testing.assert_close(plain, cond, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dropped, torch.stack([cond[0], uncond[1], uncond[2]]), rtol=1e-4, atol=1e-4)
    assert torch.equal(dropped[0], plain[0]) and torch.equal(none, plain)  # None = no row dropped


def test_weights_may_name_a_folder_holding_one_checkpoint(weights, tmp_path):
    gen = make(weights, weights=str(weights), tokenizer=str(weights))  # t2i_tiny.pt and vq_tiny.pt side by side
    reference = make(weights)
    assert all(torch.equal(v, reference.model.state_dict()[k]) for k, v in gen.model.state_dict().items())
    assert torch.equal(gen.vq.quantize.embedding.weight, reference.vq.quantize.embedding.weight)

    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.pt", "b.pt"):
        shutil.copy(weights / "t2i_tiny.pt", two / name)
    with pytest.raises(ValueError, match=r"ambiguous: \['a.pt', 'b.pt'\] are all LlamaGen GPT"):
        make(weights, weights=str(two))
    only_vq = tmp_path / "only_vq"
    only_vq.mkdir()
    shutil.copy(weights / "vq_tiny.pt", only_vq / "vq.pt")
    with pytest.raises(ValueError, match=r"none of its .pt files \(\['vq.pt'\]\) is a LlamaGen GPT"):
        make(weights, weights=str(only_vq))
    with pytest.raises(ValueError, match=r"none of its .pt files \(\['a.pt', 'b.pt'\]\) is a LlamaGen VQ"):
        make(weights, tokenizer=str(two))
    with pytest.raises(ValueError, match=r"none of its .pt files \(\[\]\)"):
        make(weights, weights=str(weights / "t5"))


def test_errors_name_the_problem(weights, tmp_path):
    with pytest.raises(ValueError, match="hf download"):
        make(weights, weights=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="hf download"):
        make(weights, weights="nobody-here/not-cached/t2i_XL_stage1_256.pt")
    with pytest.raises(ValueError, match=".pt file"):
        make(weights, weights="peizesun/llamagen_t2i")
    with pytest.raises(ValueError, match="raster"):
        make(weights, order="mask")
    with pytest.raises(ValueError, match="rows_per_step"):
        make(weights, rows_per_step=3)
    with pytest.raises(ValueError, match="guidance_scale"):
        make(weights, guidance_scale=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        make(weights, options=dict(top_p=0.0))
    with pytest.raises(ValueError, match="not a LlamaGen text-to-image GPT"):
        make(weights, weights=str(weights / "vq_tiny.pt"))
    bad = tmp_path / "plain.pt"
    torch.save({"weights": {}}, bad)
    with pytest.raises(ValueError, match="none of the entries"):
        make(weights, tokenizer=str(bad))
    gen = make(weights)
    with pytest.raises(ValueError, match="generators"):
        gen.start(PROMPTS, generators(2))


def test_llamagen_preset_loads():
    cfg = load_config("configs/llamagen.yaml")
    g = cfg.generation
    assert (g.backend, g.order, g.weights, g.tokenizer) == \
        ("llamagen", "raster", "peizesun/llamagen_t2i/t2i_XL_stage1_256.pt", "peizesun/llamagen_t2i/vq_ds16_t2i.pt")
    assert 1 + g.guidance_scale == 7.5 and g.top_k == 1000 and g.temperature == 1.0  # sample_t2i.py defaults
    assert 16 % g.rows_per_step == 0
    assert (cfg.run.eval_num, cfg.run.search_num) == (4, 20)


def test_bfloat16_runs_and_keeps_the_vq_in_float32(weights):
    gen = make(weights, dtype="bfloat16")
    assert gen.model.output.weight.dtype == torch.bfloat16 and gen.text_encoder.dtype == torch.bfloat16
    assert gen.vq.post_quant_conv.weight.dtype == torch.float32 and gen.model.rope.dtype == torch.float32
    canvas = run(gen, PROMPTS[:2], generators(2))
    assert canvas.cache.keys[0].dtype == torch.bfloat16
    assert ((canvas.tokens >= 0) & (canvas.tokens < VOCAB)).all()
    assert gen.finish(canvas).shape == (2, 3, 8, 8)


def test_every_search_policy_runs_on_llamagen(weights):
    from tests.policy_checks import check_lookahead, check_policies, check_scaling_policies

    gen = make(weights)
    check_policies(gen, gen.grid * gen.grid)
    check_scaling_policies(gen, gen.grid * gen.grid)
    check_lookahead(gen)
