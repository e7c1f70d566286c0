"""Convert upstream's LLaVA-NeXT reward checkpoints (orm_ft/, parm/) to transformers' LlavaOnevision layout.

    python scripts/convert_llava_next_reward.py --src ckpts/parm --dst ckpts/parm_hf
    # then: reward.backend=llava_onevision reward.checkpoint=ckpts/parm_hf

ZiyuG/Image-Generation-CoT's ``orm_ft`` and ``parm`` are full fine-tunes of
lmms-lab/llava-onevision-qwen2-7b-ov saved by LLaVA-NeXT's trainer (``LlavaQwenForCausalLM``:
Qwen2 fields plus ``mm_*`` fields in config.json, keys ``model.vision_tower.vision_tower.vision_model.*``,
``model.mm_projector.{0,2}``, ``model.image_newline``, ``model.layers.*``, ``lm_head``). This
follows transformers' convert_llava_onevision_weights_to_hf.py
but reads a local folder, takes the text config from the checkpoint's own config.json and writes
the transformers 5.x key layout:

- vision tower: SigLIP without its pooling head and without its last layer, which LLaVA-NeXT
  deletes before training (llava/model/multimodal_encoder/siglip_encoder.py:581-582), so the
  layer count is read from the weights; features are the last remaining layer, all patches
  (``vision_feature_layer=-1``, ``vision_feature_select_strategy="full"``). The SigLIP sizes
  are not in the checkpoint: ``--vision-config`` (a SiglipVisionConfig JSON) defaults to
  google/siglip-so400m-patch14-384;
- tokenizer: the checkpoint's, plus ``<image>`` and ``<video>`` special tokens whose ids must fall
  in the embedding's spare rows (true for Qwen2: 151646/151647 < 152064); their embedding rows
  are never read, the image features replace them;
- preprocessor_config.json: upstream's SigLIP processor (mean = std = 0.5, bicubic, vision size).
Writes config.json, model safetensors, tokenizer files and preprocessor_config.json into ``--dst``.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

SIGLIP_SO400M = dict(hidden_size=1152, intermediate_size=4304, num_attention_heads=16, image_size=384, patch_size=14,
                     hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
"""google/siglip-so400m-patch14-384's vision sizes (upstream ``mm_vision_tower``)."""

SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
"""Upstream's SigLipImageProcessor (siglip_encoder.py:35)."""

QWEN2_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
                "tie_word_embeddings", "use_sliding_window", "sliding_window", "max_window_layers",
                "attention_dropout", "bos_token_id", "eos_token_id", "rope_theta")
"""Text-model fields of LLaVA-NeXT's LlavaQwenConfig (a Qwen2Config) carried into the text config."""

VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."

RENAMES = (
    (VISION_PREFIX, "model.vision_tower."),
    ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
    ("model.image_newline", "model.image_newline"),
    ("model.embed_tokens.", "model.language_model.embed_tokens."),
    ("model.layers.", "model.language_model.layers."),
    ("model.norm.", "model.language_model.norm."),
    ("lm_head.", "lm_head."),
)
"""LLaVA-NeXT key prefix -> ``LlavaOnevisionForConditionalGeneration.state_dict()`` prefix (transformers 5.x)."""


def rename_key(key: str) -> str | None:
    """The transformers name of a LLaVA-NeXT key; ``None`` for keys with no counterpart (dropped)."""
    if key.endswith(".inv_freq") or key.startswith(VISION_PREFIX + "head."):
        return None  # rotary caches; SigLIP's pooling head, replaced by Identity upstream (siglip_encoder.py:582)
    for old, new in RENAMES:
        if key.startswith(old):
            return new + key[len(old):]
    raise ValueError(f"unexpected key {key!r} in the LLaVA-NeXT checkpoint; this converter knows SigLIP + "
                     "mlp2x_gelu + Qwen2 reward models (upstream orm_ft/ and parm/) only")


def read_weights(src: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(src.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{src} holds no *.safetensors files; pass the downloaded orm_ft/ or parm/ folder")
    weights = {}
    for file in files:
        weights.update(load_file(file))
    return weights


def check_llava_next_config(config: dict, src: Path) -> None:
    expected = {"mm_projector_type": "mlp2x_gelu"}
    for key, value in expected.items():
        if config.get(key) != value:
            raise ValueError(f"{src}/config.json has {key}={config.get(key)!r}, expected {value!r}: not a "
                             "LLaVA-OneVision reward checkpoint")
    if "siglip" not in str(config.get("mm_vision_tower", "")).lower():
        raise ValueError(f"{src}/config.json mm_vision_tower={config.get('mm_vision_tower')!r} is not SigLIP")
    if "unpad" not in config.get("mm_patch_merge_type", ""):
        raise ValueError(f"{src}/config.json mm_patch_merge_type={config.get('mm_patch_merge_type')!r} has no "
                         "image_newline; transformers' LlavaOnevision always appends one")
    if config.get("rope_scaling"):
        raise ValueError(f"{src}/config.json sets rope_scaling={config['rope_scaling']!r}; not supported here")
    if not isinstance(config.get("image_grid_pinpoints"), list):
        raise ValueError(f"{src}/config.json image_grid_pinpoints must be a list of [height, width] in pixels, "
                         f"got {config.get('image_grid_pinpoints')!r}")


def count_vision_layers(weights: dict[str, torch.Tensor]) -> int:
    pattern = re.compile(re.escape(VISION_PREFIX) + r"encoder\.layers\.(\d+)\.")
    indices = {int(match.group(1)) for key in weights if (match := pattern.match(key))}
    if not indices or indices != set(range(len(indices))):
        raise ValueError(f"vision layers in the checkpoint are {sorted(indices)}; expected 0..N-1")
    return len(indices)


def build_config(llava_next: dict, vision: dict, num_vision_layers: int, image_token_id: int, video_token_id: int):
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    text_config = Qwen2Config(**{key: llava_next[key] for key in QWEN2_FIELDS if key in llava_next})
    vision_config = SiglipVisionConfig(**{**vision, "num_hidden_layers": num_vision_layers, "vision_use_head": False})
    aspect = llava_next.get("image_aspect_ratio", "anyres_max_9")
    return LlavaOnevisionConfig(
        text_config=text_config, vision_config=vision_config, image_token_id=image_token_id,
        video_token_id=video_token_id, vision_feature_layer=-1, vision_feature_select_strategy="full",
        image_grid_pinpoints=llava_next["image_grid_pinpoints"], projector_hidden_act="gelu",
        multimodal_projector_bias=True, tie_word_embeddings=text_config.tie_word_embeddings,
        # training's tiling (anyres_max_9); the judge's image_mode decides what inference uses
        vision_aspect_ratio=aspect if aspect.startswith("anyres_max") else "anyres_max_9",
    )


def add_image_tokens(tokenizer, vocab_size: int) -> tuple[int, int]:
    from transformers import AddedToken

    for token in ("<image>", "<video>"):
        if token not in tokenizer.get_vocab():
            tokenizer.add_tokens([AddedToken(token, special=True, normalized=False)], special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids("<image>"), tokenizer.convert_tokens_to_ids("<video>")
    if max(ids) >= vocab_size:
        raise ValueError(f"<image>/<video> got ids {ids}, beyond the embedding's {vocab_size} rows; this "
                         "converter does not resize embeddings")
    return ids


def convert(src: str | Path, dst: str | Path, vision_config: dict | None = None, dtype: str | None = None) -> Path:
    """Write the transformers checkpoint of LLaVA-NeXT folder ``src`` into ``dst``; returns ``dst``."""
    from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil)

    src, dst = Path(src), Path(dst)
    if not (src / "config.json").is_file():
        raise ValueError(f"{src} has no config.json; pass the downloaded orm_ft/ or parm/ folder")
    llava_next = json.loads((src / "config.json").read_text())
    check_llava_next_config(llava_next, src)
    weights = read_weights(src)
    tokenizer = AutoTokenizer.from_pretrained(src)
    image_token_id, video_token_id = add_image_tokens(tokenizer, llava_next["vocab_size"])
    vision = vision_config if vision_config is not None else SIGLIP_SO400M
    config = build_config(llava_next, vision, count_vision_layers(weights), image_token_id, video_token_id)

    state_dict = {new: value for key, value in weights.items() if (new := rename_key(key)) is not None}
    if "lm_head.weight" not in state_dict and config.tie_word_embeddings:
        state_dict["lm_head.weight"] = state_dict["model.language_model.embed_tokens.weight"]
    with torch.device("meta"):
        model = LlavaOnevisionForConditionalGeneration(config)
    try:
        model.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as err:
        raise ValueError(f"the weights of {src} do not fit the config built from it and the vision config "
                         f"{vision}: {err}") from err
    if dtype is not None:
        model.to(getattr(torch, dtype))

    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    tokenizer.save_pretrained(dst)
    size = config.vision_config.image_size
    LlavaOnevisionImageProcessorPil(
        image_mean=list(SIGLIP_MEAN), image_std=list(SIGLIP_STD), size={"height": size, "width": size},
        image_grid_pinpoints=config.image_grid_pinpoints,
    ).save_pretrained(dst)
    return dst


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="LLaVA-NeXT checkpoint folder (e.g. ckpts/parm)")
    parser.add_argument("--dst", required=True, help="output folder for the transformers checkpoint")
    parser.add_argument("--vision-config", default=None,
                        help="SiglipVisionConfig JSON for the vision tower (default: siglip-so400m-patch14-384)")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="cast the weights (default: keep the stored dtype)")
    args = parser.parse_args(argv)
    vision = json.loads(Path(args.vision_config).read_text()) if args.vision_config else None
    print(f"wrote {convert(args.src, args.dst, vision, args.dtype)}")


if __name__ == "__main__":
    main()
