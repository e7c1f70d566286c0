"""Qwen2-VL and Qwen2.5-VL as yes/no judges (an alternative to the paper's LLaVA-OneVision).

Same questions and scoring as ``reward_models.llava_onevision``; what differs is Qwen-VL's own
image handling:

- text: ChatML with the default system message of Qwen-VL's chat template, which is upstream's
  too ("You are a helpful assistant."); the ``<image>`` marker of the question becomes
  ``<|vision_start|>`` + N x ``<|image_pad|>`` + ``<|vision_end|>``, with N =
  ``prod(image_grid_thw) / merge_size**2``;
- image: the checkpoint's Qwen2-VL image processor (dynamic resolution; the PIL backend, since
  torchvision is not installed);
- ``mm_token_type_ids`` (1 on image tokens) is always passed: Qwen2-VL raises without it and
  Qwen2.5-VL silently falls back to 1-D positions (transformers 5.24).

    judge = QwenVLJudge(JudgeConfig(backend="qwen2_5_vl", checkpoint="Qwen/Qwen2.5-VL-7B-Instruct"), "cuda")
"""
from __future__ import annotations

import torch

from reward_models.judge import (JudgeConfig, Question, answer_token_ids, checkpoint_folder, left_pad,
                                 score_in_batches, to_pil_images, torch_dtype, yes_no_from_logits)
from reward_models.questions import chatml, dialogue, encode_around_image

MODEL_CLASSES = {
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
}
"""``reward.backend`` -> transformers class; the checkpoint's ``model_type`` must be the same name."""


class QwenVLJudge:
    """``YesNoJudge`` on a Qwen2-VL or Qwen2.5-VL checkpoint (``cfg.backend`` says which)."""

    def __init__(self, cfg: JudgeConfig, device: torch.device | str = "cpu"):
        import transformers
        from transformers import AutoConfig, AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        if cfg.backend not in MODEL_CLASSES:
            raise ValueError(f"QwenVLJudge serves reward.backend {sorted(MODEL_CLASSES)}, not {cfg.backend!r}")
        folder = checkpoint_folder(cfg.checkpoint, "")
        model_type = AutoConfig.from_pretrained(folder).model_type
        if model_type != cfg.backend:
            raise ValueError(f"reward.checkpoint={cfg.checkpoint!r} is a {model_type!r} model but "
                             f"reward.backend={cfg.backend!r}; set reward.backend={model_type}")
        self.cfg = cfg
        self.device = torch.device(device)
        model_class = getattr(transformers, MODEL_CLASSES[cfg.backend])
        self.model = model_class.from_pretrained(folder, dtype=torch_dtype(cfg.dtype), device_map=self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.image_processor = Qwen2VLImageProcessorPil.from_pretrained(folder)
        self.yes_ids, self.no_ids = answer_token_ids(self.tokenizer, cfg.fold_case)

    def prompt_ids(self, question: Question, num_image_tokens: int) -> list[int]:
        """Token ids of the rendered chat with the vision block of ``num_image_tokens`` image pads."""
        config = self.model.config
        image_ids = [config.vision_start_token_id] + [config.image_token_id] * num_image_tokens
        return encode_around_image(self.tokenizer, chatml(dialogue(question)), image_ids + [config.vision_end_token_id])

    @torch.no_grad()
    def yes_no_probs(self, images: torch.Tensor, questions: list[Question]) -> tuple[torch.Tensor, torch.Tensor]:
        return score_in_batches(self._score, images, questions, self.cfg.batch_size)

    def _score(self, images: torch.Tensor, questions: list[Question]) -> tuple[torch.Tensor, torch.Tensor]:
        processed = self.image_processor(images=to_pil_images(images), return_tensors="pt")
        grid_thw = processed["image_grid_thw"]
        counts = (grid_thw.prod(-1) // self.image_processor.merge_size ** 2).tolist()
        sequences = [self.prompt_ids(question, count) for question, count in zip(questions, counts)]
        # The pad id is never attended to (mask 0) and never scored; any in-vocabulary id will do.
        input_ids, attention_mask = left_pad(sequences, pad_id=self.tokenizer.pad_token_id or 0)
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        mm_token_type_ids = ((input_ids == self.model.config.image_token_id) & attention_mask.bool()).long()
        # No position_ids: the model derives its 3-D rope positions from the mask and the grids.
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask,
                            pixel_values=processed["pixel_values"].to(self.device, self.model.dtype),
                            image_grid_thw=grid_thw.to(self.device), mm_token_type_ids=mm_token_type_ids,
                            logits_to_keep=1).logits[:, -1]
        return yes_no_from_logits(logits, self.yes_ids, self.no_ids)
