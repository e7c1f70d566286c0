"""scripts/convert_llava_next_reward.py round trip on a tiny random LLaVA-OneVision.

A tiny transformers model is written out in upstream's LLaVA-NeXT training layout (the inverse
key mapping below), converted back by the script, and loaded through ``LlavaOnevisionJudge``:
weights and yes/no probabilities must equal the original's.
Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_convert_reward.py
"""
import json
from pathlib import Path

import pytest
import torch
from vlm_fixtures import (GRID_PINPOINTS, QUESTIONS, make_tokenizer, random_images, save_llava, spread_weights,
                          tiny_llava_config)

from reward_models import build_judge
from reward_models.judge import JudgeConfig
from scripts.convert_llava_next_reward import main as convert_main

TO_LLAVA_NEXT = (
    ("model.vision_tower.", "model.vision_tower.vision_tower.vision_model."),
    ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
    ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
    ("model.image_newline", "model.image_newline"),
    ("model.language_model.", "model."),
    ("lm_head.", "lm_head."),
)
"""transformers 5.x key prefix -> LLaVA-NeXT (LlavaQwenForCausalLM) key prefix."""

TEXT_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
               "use_sliding_window", "sliding_window", "max_window_layers", "attention_dropout")


def llava_next_key(key: str) -> str:
    for new, old in TO_LLAVA_NEXT:
        if key.startswith(new):
            return old + key[len(new):]
    raise AssertionError(f"no LLaVA-NeXT name for {key}")


def write_llava_next(folder: Path, model, tokenizer) -> Path:
    """``model`` saved as LLaVA-NeXT's trainer would: two safetensors shards, LlavaQwenConfig-style config.json."""
    from safetensors.torch import save_file

    folder.mkdir()
    weights = {llava_next_key(key): value.contiguous() for key, value in model.state_dict().items()}
    weights["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)  # older checkpoints carry these
    keys = sorted(weights)
    save_file({key: weights[key] for key in keys[::2]}, folder / "model-00001-of-00002.safetensors")
    save_file({key: weights[key] for key in keys[1::2]}, folder / "model-00002-of-00002.safetensors")
    text = model.config.text_config
    config = {field: getattr(text, field) for field in TEXT_FIELDS}
    config.update(
        architectures=["LlavaQwenForCausalLM"], model_type="llava_qwen", rope_theta=10000.0, rope_scaling=None,
        mm_hidden_size=model.config.vision_config.hidden_size, mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=-2, mm_vision_select_feature="patch",
        mm_vision_tower="google/siglip-so400m-patch14-384", mm_patch_merge_type="spatial_unpad",
        image_aspect_ratio="anyres_max_9", image_grid_pinpoints=GRID_PINPOINTS, mm_newline_position="one_token",
    )
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """(original folder, LLaVA-NeXT folder, converted folder)."""
    from transformers import AddedToken, LlavaOnevisionForConditionalGeneration

    root = tmp_path_factory.mktemp("convert")
    base_tokenizer = make_tokenizer([])  # upstream's tokenizer has no <image>: the converter adds it
    tokenizer = make_tokenizer([])
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in ("<image>", "<video>")],
                         special_tokens=True)
    model = LlavaOnevisionForConditionalGeneration(tiny_llava_config(tokenizer)).eval()
    spread_weights(model, seed=5)
    original = save_llava(root / "original", model, tokenizer)
    llava_next = write_llava_next(root / "llava_next", model, base_tokenizer)
    vision = model.config.vision_config.to_dict()
    vision.update(num_hidden_layers=3)  # SigLIP's own count; the checkpoint holds one fewer, as upstream's
    (root / "vision.json").write_text(json.dumps(vision))
    convert_main(["--src", str(llava_next), "--dst", str(root / "converted"),
                  "--vision-config", str(root / "vision.json")])
    return original, llava_next, root / "converted"


def test_converted_weights_and_config_equal_the_original(round_trip):
    from transformers import LlavaOnevisionForConditionalGeneration

    original, _, converted = round_trip
    ours = LlavaOnevisionForConditionalGeneration.from_pretrained(converted)
    theirs = LlavaOnevisionForConditionalGeneration.from_pretrained(original)
    assert ours.config.vision_config.num_hidden_layers == 2  # read from the weights, not the 3 of vision.json
    assert ours.config.vision_config.vision_use_head is False
    assert (ours.config.vision_feature_layer, ours.config.vision_feature_select_strategy) == (-1, "full")
    assert (ours.config.image_token_id, ours.config.video_token_id) == (theirs.config.image_token_id,
                                                                        theirs.config.video_token_id)
    assert ours.config.image_grid_pinpoints == GRID_PINPOINTS
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert ours_state.keys() == theirs_state.keys()
    for key, value in theirs_state.items():
        assert torch.equal(ours_state[key], value), key


def test_converted_judge_gives_the_original_probabilities(round_trip):
    original, _, converted = round_trip
    images = random_images(4, seed=6)
    expected = build_judge(JudgeConfig(checkpoint=str(original), dtype="float32")).yes_no_probs(images, QUESTIONS)
    judge = build_judge(JudgeConfig(checkpoint=str(converted), dtype="float32"))
    got = judge.yes_no_probs(images, QUESTIONS)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert list(judge.image_processor.image_mean) == [0.5, 0.5, 0.5]  # upstream's SigLIP processor


def test_converter_rejects_foreign_checkpoints(round_trip, tmp_path):
    from scripts.convert_llava_next_reward import rename_key

    _, llava_next, _ = round_trip
    with pytest.raises(ValueError, match="unexpected key"):
        rename_key("model.vision_resampler.weight")
    config = json.loads((llava_next / "config.json").read_text())
    config["mm_projector_type"] = "linear"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="mm_projector_type"):
        convert_main(["--src", str(foreign), "--dst", str(tmp_path / "out")])
