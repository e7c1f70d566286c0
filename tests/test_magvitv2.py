"""MAGVIT-v2 (generation/magvitv2.py): checkpoint key layout, LFQ table, decode shapes, save/load round trip."""
import json
import re

import pytest
import torch
from safetensors.torch import save_file

from generation.magvitv2 import AttnBlock, MagvitConfig, MagvitV2, load_magvitv2

TINY = {"ch": 32, "encoder_ch_mult": [1, 2], "encoder_num_res_blocks": [1, 1],
        "decoder_ch_mult": [1, 2], "decoder_num_res_blocks": [1, 2], "codebook_bits": 4}

# Module tree of showlab/magvitv2 (upstream models/modeling_magvitv2.py, models/common_modules.py).
RESNET = r"(norm1|conv1|norm2|conv2|nin_shortcut)\.(weight|bias)"
MID = r"mid\.(block_[12]\." + RESNET + r"|attn_1\.(norm|q|k|v|proj_out)\.(weight|bias))"
EXPECTED_KEY_PATTERNS = [
    r"encoder\.conv_in\.(weight|bias)",
    r"encoder\.down\.[0-4]\.block\.[0-3]\." + RESNET,
    r"encoder\.down\.[0-3]\.downsample\.conv\.(weight|bias)",
    r"encoder\." + MID,
    r"encoder\.(norm_out|conv_out|quant_conv)\.(weight|bias)",
    r"decoder\.(post_quant_conv|conv_in)\.(weight|bias)",
    r"decoder\." + MID,
    r"decoder\.up\.[0-4]\.block\.[0-3]\." + RESNET,
    r"decoder\.up\.[1-4]\.upsample\.conv\.(weight|bias)",
    r"decoder\.(norm_out|conv_out)\.(weight|bias)",
]


@pytest.fixture(scope="module")
def real_size_state():
    with torch.device("meta"):
        return MagvitV2().state_dict()


def test_real_size_keys_follow_the_checkpoint_layout(real_size_state):
    keys = list(real_size_state)
    for key in keys:
        assert any(re.fullmatch(p, key) for p in EXPECTED_KEY_PATTERNS), key
    for pattern in EXPECTED_KEY_PATTERNS:
        assert any(re.fullmatch(pattern, k) for k in keys), pattern
    # blocks per level: decoder num_res_blocks=[4,4,3,4,3], encoder [4,3,4,3,4]
    for prefix, counts in (("decoder.up", [4, 4, 3, 4, 3]), ("encoder.down", [4, 3, 4, 3, 4])):
        for level, count in enumerate(counts):
            blocks = {k.split(".")[4] for k in keys if k.startswith(f"{prefix}.{level}.block.")}
            assert blocks == {str(j) for j in range(count)}, (prefix, level)
    # the LFQ table is not a parameter; nothing else is hidden in the tree
    assert not any(k.startswith("quantize.") for k in keys)


def test_real_size_shapes(real_size_state):
    s = {k: tuple(v.shape) for k, v in real_size_state.items()}
    assert s["decoder.post_quant_conv.weight"] == (13, 13, 1, 1)
    assert s["decoder.conv_in.weight"] == (512, 13, 3, 3)  # ch 128 * ch_mult[-1] 4
    assert s["decoder.up.3.block.0.nin_shortcut.weight"] == (256, 512, 1, 1)  # level 3 narrows 512 -> 256
    assert s["decoder.up.1.block.0.nin_shortcut.weight"] == (128, 256, 1, 1)
    assert "decoder.up.4.block.0.nin_shortcut.weight" not in s and "decoder.up.2.block.0.nin_shortcut.weight" not in s
    assert s["decoder.conv_out.weight"] == (3, 128, 3, 3)
    assert s["encoder.conv_in.weight"] == (128, 3, 3, 3)
    assert s["encoder.down.1.block.0.nin_shortcut.weight"] == (256, 128, 1, 1)
    assert s["encoder.down.3.block.0.nin_shortcut.weight"] == (512, 256, 1, 1)
    assert s["encoder.conv_out.weight"] == (13, 512, 3, 3)
    # 95.39M fp32 parameters = 381.5 MB, matching the 382 MB hub file
    assert sum(v.numel() for v in real_size_state.values()) == 95_387_004


def test_lfq_table_is_msb_first_sign_bits():
    vq = MagvitV2(MagvitConfig(**{**TINY, "codebook_bits": 13}), with_encoder=False)
    table = vq.quantize.embedding
    assert table.shape == (8192, 13)
    assert table[0].tolist() == [-1.0] * 13 and table[8191].tolist() == [1.0] * 13
    assert table[5].tolist() == [-1.0] * 10 + [1.0, -1.0, 1.0]  # 5 = 0b101
    assert table[4096].tolist() == [1.0] + [-1.0] * 12
    codes = torch.tensor([[5, 4096, 8191, 0, 1, 77]])
    z = vq.quantize.codes_to_latents(codes, (2, 3))
    assert z.shape == (1, 13, 2, 3)
    assert z[0, :, 0, 0].tolist() == table[5].tolist()  # raster order: (row 0, col 0) is code 0
    assert torch.equal(vq.quantize.latents_to_codes(z), codes)
    assert torch.equal(vq.quantize.latents_to_codes(z * 0.3), codes)  # only signs matter


def test_attention_block_matches_upstream_bmm_form():
    torch.manual_seed(0)
    block = AttnBlock(32).eval()
    x = torch.randn(2, 32, 3, 4)
    h = block.norm(x)
    q, k, v = (p(h).reshape(2, 32, 12) for p in (block.q, block.k, block.v))
    w = torch.softmax(torch.bmm(q.permute(0, 2, 1), k) * 32 ** -0.5, dim=2)
    expected = x + block.proj_out(torch.bmm(v, w.permute(0, 2, 1)).reshape(2, 32, 3, 4))
    assert torch.allclose(block(x), expected, atol=1e-5)


def test_decode_shapes():
    torch.manual_seed(0)
    vq = MagvitV2(MagvitConfig(**TINY)).eval()
    assert vq.codebook_size == 16 and vq.cfg.downsample_factor == 2
    codes = torch.randint(0, 16, (2, 16))
    with torch.no_grad():
        assert vq.decode_codes(codes).shape == (2, 3, 8, 8)  # 4x4 grid, one upsample
        assert vq.decode_codes(codes[:, :6], shape=(2, 3)).shape == (2, 3, 4, 6)
        assert vq.encode_codes(torch.zeros(2, 3, 8, 8)).shape == (2, 16)
    with pytest.raises(ValueError, match="square"):
        vq.decode_codes(codes[:, :6])


def save_tiny(folder, vq: MagvitV2, extra: dict | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": "MAGVITv2", **TINY}))
    save_file({**vq.state_dict(), **(extra or {})}, str(folder / "pytorch_model.safetensors"))


def test_tiny_round_trip_through_save_and_load(tmp_path):
    torch.manual_seed(0)
    vq = MagvitV2(MagvitConfig(**TINY)).eval()
    # the hub file may carry the LFQ buffers: they are checked and dropped
    save_tiny(tmp_path / "vq", vq, {"quantize.embedding": vq.quantize.embedding.clone(),
                                    "quantize.power_vals": vq.quantize.power_vals.clone()})
    loaded = load_magvitv2(str(tmp_path / "vq"))
    codes = torch.randint(0, 16, (2, 16))
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.decode_codes(codes), vq.decode_codes(codes))
        assert torch.equal(loaded.encode_codes(images), vq.encode_codes(images))
    decoder_only = load_magvitv2(str(tmp_path / "vq"), with_encoder=False)
    assert not hasattr(decoder_only, "encoder")
    with torch.no_grad():
        assert torch.equal(decoder_only.decode_codes(codes), vq.decode_codes(codes))
    with pytest.raises(ValueError, match="with_encoder=False"):
        decoder_only.encode_codes(images)


def test_load_rejects_a_wrong_lfq_table_and_unknown_config(tmp_path):
    vq = MagvitV2(MagvitConfig(**TINY))
    save_tiny(tmp_path / "bad", vq, {"quantize.embedding": -vq.quantize.embedding})
    with pytest.raises(ValueError, match="LFQ table"):
        load_magvitv2(str(tmp_path / "bad"))
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"channels": 3}))
    with pytest.raises(ValueError, match="unknown MAGVIT-v2 config keys"):
        load_magvitv2(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="hf download showlab/magvitv2"):
        load_magvitv2(str(tmp_path / "missing" / "deeper"))
