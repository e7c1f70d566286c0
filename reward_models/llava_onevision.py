"""LLaVA-OneVision as a yes/no judge: the paper's verifier model (paper section 3.2).

The model is transformers' ``LlavaOnevisionForConditionalGeneration``; the prompt, the image
handling and the scoring follow upstream ZiyuGuo99/Image-Generation-CoT selector.py, which runs
LLaVA-NeXT with ``image_aspect_ratio="pad"``:

- text: ChatML of upstream's ``qwen_1_5`` template (``prompts.chatml``), tokenised around the
  ``<image>`` marker piece by piece as ``tokenizer_image_token`` does (llava/mm_utils.py:341);
- image, ``pad`` mode: pad to a square with the processor's mean colour, resize to the vision
  tower's size (bicubic), rescale, normalise: ONE base crop (llava/mm_utils.py:329-333), whose
  features plus ``image_newline`` fill the image tokens, 729 + 1 = 730 for SigLIP-384
  (llava/model/llava_arch.py:410-416);
- score: softmax over the whole vocabulary at the last prompt position, read at "yes" and "no"
  (``judge.yes_no_from_logits``), for a left-padded batch in one forward pass.

Why the features are computed here: transformers 5.24 cannot be made to use one crop per image
through ``pixel_values``. ``get_image_features`` gives every image of a single-image sample
``image_size_to_num_patches`` crops, which always counts the base crop plus at least one grid
tile, and splits the vision output by that count; only images of multi-image samples
(``batch_num_images`` > 1) get one crop, which cannot describe a batch holding one image. So we
run the vision tower and projector as ``get_image_features`` does, append ``image_newline`` as its
one-crop branch of ``pack_image_features`` does, and pass ``inputs_embeds``
(tests/test_judge_vlm.py checks these features equal transformers' own one-crop path).
``anyres`` mode instead uses transformers' anyres_max_9 tiling and feature packing, the
reward models' training setting.

    judge = LlavaOnevisionJudge(JudgeConfig(checkpoint="ckpts/parm_hf"), device="cuda")
    p_yes, p_no = judge.yes_no_probs(images_uint8, [Question("orm", prompt)] * len(images_uint8))
"""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from reward_models.judge import (JudgeConfig, Question, answer_token_ids, checkpoint_folder, left_pad,
                                 score_in_batches, to_pil_images, torch_dtype, yes_no_from_logits)
from reward_models.questions import chatml, dialogue, encode_around_image

IMAGE_MODES = ("pad", "anyres")
CONVERT_HINT = ("Upstream's fine-tuned judges (ZiyuG/Image-Generation-CoT orm_ft/ and parm/) are in LLaVA-NeXT "
                "layout: download them, then run `python scripts/convert_llava_next_reward.py --src ckpts/parm "
                "--dst ckpts/parm_hf` and set reward.checkpoint=ckpts/parm_hf. The zero-shot judge is "
                "llava-hf/llava-onevision-qwen2-7b-ov-hf.")


def expand_to_square(image: Image.Image, fill: tuple[int, ...]) -> Image.Image:
    """``image`` centred on a square canvas of ``fill`` colour (upstream expand2square, llava/mm_utils.py:300)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def normalise(image: Image.Image, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``float [3, size, size]``: bicubic resize, rescale by 1/255, ``(x - mean) / std``.

    Upstream's SigLipImageProcessor (llava/model/multimodal_encoder/siglip_encoder.py:34-66) resizes
    with PIL bicubic on the uint8 image through transformers' ``resize``, as here.
    """
    resized = image.convert("RGB").resize((size, size), Image.BICUBIC)
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1).float() * (1 / 255)
    return (pixels - mean[:, None, None]) / std[:, None, None]


class LlavaOnevisionJudge:
    """``YesNoJudge`` on a transformers-layout LLaVA-OneVision checkpoint."""

    def __init__(self, cfg: JudgeConfig, device: torch.device | str = "cpu"):
        from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration
        from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
            LlavaOnevisionImageProcessorPil)

        if cfg.image_mode not in IMAGE_MODES:
            raise ValueError(f"reward.image_mode={cfg.image_mode!r} is not one of {IMAGE_MODES}")
        folder = checkpoint_folder(cfg.checkpoint, CONVERT_HINT)
        if not os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
            raise ValueError(f"{folder} has no preprocessor_config.json (image mean/std); is it a LLaVA-NeXT "
                             f"checkpoint that still needs conversion? {CONVERT_HINT}")
        self.cfg = cfg
        self.device = torch.device(device)
        self.model = LlavaOnevisionForConditionalGeneration.from_pretrained(
            folder, dtype=torch_dtype(cfg.dtype), device_map=self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.image_processor = LlavaOnevisionImageProcessorPil.from_pretrained(folder)
        self.yes_ids, self.no_ids = answer_token_ids(self.tokenizer, cfg.fold_case)
        self.image_size = self.model.config.vision_config.image_size
        self.mean = torch.tensor(self.image_processor.image_mean, dtype=torch.float32)
        self.std = torch.tensor(self.image_processor.image_std, dtype=torch.float32)

    # ------------------------------------------------------------------------
    # Inputs

    def prompt_ids(self, question: Question, num_image_tokens: int) -> list[int]:
        """Token ids of the rendered chat, the image marker expanded to ``num_image_tokens`` image tokens."""
        image_ids = [self.model.config.image_token_id] * num_image_tokens
        return encode_around_image(self.tokenizer, chatml(dialogue(question)), image_ids)

    def pad_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """``float [B, 3, S, S]`` for ``uint8 [B, 3, H, W]``: upstream's "pad" preprocessing, S the vision size."""
        fill = tuple(int(m * 255) for m in self.image_processor.image_mean)  # as upstream, mm_utils.py:331
        return torch.stack([normalise(expand_to_square(image, fill), self.image_size, self.mean, self.std)
                            for image in to_pil_images(images)])

    def pad_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, P + 1, D]``: one crop's projected features, then ``image_newline``.

        Mirrors ``LlavaOnevisionModel.get_image_features`` (feature layer and select strategy from
        the config) and the single-crop branch of ``pack_image_features``.
        """
        config, inner = self.model.config, self.model.model
        vision = inner.vision_tower(pixel_values.to(self.device, self.model.dtype), output_hidden_states=True)
        layer = config.vision_feature_layer
        if isinstance(layer, int):
            hidden = vision.hidden_states[layer]
        else:
            hidden = torch.cat([vision.hidden_states[index] for index in layer], dim=-1)
        if config.vision_feature_select_strategy == "default":
            hidden = hidden[:, 1:]  # a CLS token; SigLIP has none ("full")
        features = inner.multi_modal_projector(hidden)
        newline = inner.image_newline.to(features.dtype).expand(features.shape[0], 1, -1)
        return torch.cat([features, newline], dim=1)

    def anyres_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Per image ``[N_i, D]``: transformers' anyres tiling and packing (``vision_aspect_ratio`` of the config)."""
        processed = self.image_processor(images=to_pil_images(images), return_tensors="pt")
        output = self.model.model.get_image_features(
            pixel_values=processed["pixel_values"].to(self.device, self.model.dtype),
            image_sizes=processed["image_sizes"].to(self.device),
            vision_aspect_ratio=self.model.config.vision_aspect_ratio,
        )
        return list(output.pooler_output)

    def image_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        if self.cfg.image_mode == "pad":
            return list(self.pad_features(self.pad_pixels(images)))
        return self.anyres_features(images)

    # ------------------------------------------------------------------------
    # Scoring

    @torch.no_grad()
    def yes_no_probs(self, images: torch.Tensor, questions: list[Question]) -> tuple[torch.Tensor, torch.Tensor]:
        return score_in_batches(self._score, images, questions, self.cfg.batch_size)

    def _score(self, images: torch.Tensor, questions: list[Question]) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.image_features(images)
        sequences = [self.prompt_ids(question, len(feature)) for question, feature in zip(questions, features)]
        # The pad id is never attended to (mask 0) and never scored; any in-vocabulary id will do.
        input_ids, attention_mask = left_pad(sequences, pad_id=self.tokenizer.pad_token_id or 0)
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        embeds = self.model.get_input_embeddings()(input_ids)
        image_mask = (input_ids == self.model.config.image_token_id) & attention_mask.bool()
        embeds[image_mask] = torch.cat(features).to(embeds.dtype)
        # Positions count real tokens only, so a left-padded row sees the positions it would alone.
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                            logits_to_keep=1).logits[:, -1]
        return yes_no_from_logits(logits, self.yes_ids, self.no_ids)
