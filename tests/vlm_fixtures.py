"""Tiny random VLM judges (LLaVA-OneVision, Qwen2-VL) saved in the transformers layout, and helpers to build
and feed them (shared by the judge and checkpoint-conversion tests)."""
from pathlib import Path

import torch

from reward_models import questions
from reward_models.judge import Question


VISION_SIZE, VISION_PATCH = 32, 8  # tiny SigLIP: (32 / 8)**2 = 16 patches
CHAT_SPECIALS = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAVA_SPECIALS = ["<image>", "<video>"]
QWEN_SPECIALS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
GRID_PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]


def make_tokenizer(specials: list[str]):
    """WordLevel over the judge questions' words, so "yes"/"no"/"Yes"/"No" are whole tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = [questions.ORM_QUESTION, questions.PRM_QUESTION, questions.CLARITY_QUESTION, questions.POTENTIAL_QUESTION,
             questions.SYSTEM, "system user assistant Yes No a photo of cat two dogs red"]
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(words, trainers.WordLevelTrainer(special_tokens=CHAT_SPECIALS + specials))
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<|endoftext|>")


def tiny_llava_config(tokenizer, num_vision_layers: int = 2):
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    text = Qwen2Config(vocab_size=len(tokenizer) + 3, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0)
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=num_vision_layers,
                                num_attention_heads=2, image_size=VISION_SIZE, patch_size=VISION_PATCH,
                                vision_use_head=False)
    return LlavaOnevisionConfig(text_config=text, vision_config=vision,
                                image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                                video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
                                vision_feature_layer=-1, vision_feature_select_strategy="full",
                                image_grid_pinpoints=GRID_PINPOINTS)


def spread_weights(model, seed: int) -> None:
    """Re-draw every weight matrix with std 0.3 so the tiny model's answers depend visibly on its input."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)


def save_llava(folder: Path, model, tokenizer) -> Path:
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil)

    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # SigLIP's mean = std = 0.5, as in llava-hf/llava-onevision-qwen2-7b-ov-hf's preprocessor_config.json
    LlavaOnevisionImageProcessorPil(size={"height": VISION_SIZE, "width": VISION_SIZE}, image_mean=[0.5] * 3,
                                    image_std=[0.5] * 3, image_grid_pinpoints=GRID_PINPOINTS).save_pretrained(folder)
    return folder


def random_images(count: int, height: int = 24, width: int = 40, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, height, width), generator=generator, dtype=torch.uint8)


QUESTIONS = [Question("orm", "a photo of a cat"), Question("potential", "two red dogs"), Question("prm", "a cat"),
             Question("clarity", "a photo of two dogs")]
