"""bench/gpu_check.py off the GPU: the ``--tiny`` CPU smoke run of the LlamaGen check, the real sizes it
builds on the GPU (counted on the meta device, nothing allocated) and its T5-like word tokenizer.

The Show-o and Janus tiny runs keep their real vocabularies and take minutes on 2 cores, so only
LlamaGen (seconds) runs here; the GPU run itself is scripts/gpu_check.sh.
"""
import re

import torch
from transformers import AutoTokenizer, T5EncoderModel

from bench.gpu_check import REAL, llamagen_gpt_config, main, t5_config, word_tokenizer
from generation.llamagen import LlamaGenGPT

N = 2


def test_tiny_llamagen_smoke_prints_one_consistent_row(capsys):
    main(["--tiny", "--backends", "llamagen", "--num-candidates", str(N), "--repeats", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| LlamaGen")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[0] == "LlamaGen-XL 775M (256x256, 256 tokens, cfg 7.5)"
    assert cells[3:] == ["n/a", "n/a"]  # no MFU or memory on CPU
    images_per_s, ms_per_step = float(cells[1]), float(cells[2])
    # images/s = N / t and ms/step = 1000 t / 256 tokens, so their product is 1000 N / 256 = 7.8125,
    # up to the rounding of both to 2 decimals.
    assert re.fullmatch(r"\d+\.\d\d", cells[1]) and re.fullmatch(r"\d+\.\d\d", cells[2])
    slack = 0.005 * (images_per_s + ms_per_step) + 0.005 ** 2
    assert abs(images_per_s * ms_per_step - 1000 * N / 256) <= slack


def test_real_sizes_are_llamagen_xl_and_flan_t5_xl():
    with torch.device("meta"):
        gpt = LlamaGenGPT(llamagen_gpt_config(REAL))
        t5 = T5EncoderModel(t5_config(REAL))
    # GPT-XL: 36 x (wqkv 3840x1280 + wo 1280x1280 + 3 x 3584x1280 + 2 norms) + tok_embeddings and output
    # 16384x1280 each + cap_proj 1280x2048 + 1280x1280 + final norm 1280 = 777,678,080 ("775M").
    assert sum(p.numel() for p in gpt.parameters()) == 36 * (3840 * 1280 + 1280 ** 2 + 3 * 3584 * 1280 + 2 * 1280) \
        + 2 * 16384 * 1280 + 1280 * 2048 + 1280 ** 2 + 1280 == 777_678_080
    assert gpt.cls_embedding.uncond_embedding.shape == (120, 2048)
    assert (gpt.cfg.n_head, gpt.cfg.n_kv_head, gpt.cfg.grid) == (20, 20, 16)
    # flan-t5-xl encoder: embeddings 32128x2048; 24 x (q, k, v, o 2048x2048 + wi_0, wi_1 5120x2048 + wo
    # 2048x5120 + 2 norms); 32 buckets x 32 heads of relative bias in layer 0; final norm.
    assert sum(p.numel() for p in t5.parameters()) == 32128 * 2048 + 24 * (4 * 2048 ** 2 + 3 * 5120 * 2048 + 2 * 2048) \
        + 32 * 32 + 2048 == 1_223_527_424
    assert t5.config.feed_forward_proj == "gated-gelu" and t5.config.dense_act_fn == "gelu_new"


def test_t5_word_tokenizer_appends_eos_and_pads_right(tmp_path):
    word_tokenizer(10, {"<pad>": 0, "</s>": 1, "<unk>": 2}, tmp_path, append_eos=True, eos_token="</s>",
                   pad_token="<pad>", unk_token="<unk>")
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert len(tok) == 10
    batch = tok(["w5 cat w7"], max_length=6, padding="max_length", truncation=True)
    # w5 and w7 are placeholders 5 and 7, "cat" is unknown (2), then </s> (1) and right padding (0).
    assert batch["input_ids"] == [[5, 2, 7, 1, 0, 0]]
    assert batch["attention_mask"] == [[1, 1, 1, 1, 0, 0]]
