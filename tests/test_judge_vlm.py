"""The yes/no judges on tiny random VLMs: prompts, pad-mode image tokens, batching, plumbing.

Tiny LLaVA-OneVision / Qwen2-VL / Qwen2.5-VL models are built from configs with a WordLevel
tokenizer, saved with ``save_pretrained`` and loaded back through the real judge loaders.
Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_judge_vlm.py
"""
from pathlib import Path

import pytest
import torch

from reward_models import JUDGES, build_judge, questions
from reward_models.judge import JudgeConfig, Question

CHAT_SPECIALS = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAVA_SPECIALS = ["<image>", "<video>"]
QWEN_SPECIALS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
VISION_SIZE, VISION_PATCH = 32, 8  # tiny SigLIP: (32 / 8)**2 = 16 patches
GRID_PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]


# ----------------------------------------------------------------------------
# Tiny models (also used by tests/test_convert_reward.py)

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


def make_tiny_llava(folder: Path, seed: int = 0) -> Path:
    from transformers import LlavaOnevisionForConditionalGeneration

    tokenizer = make_tokenizer(LLAVA_SPECIALS)
    model = LlavaOnevisionForConditionalGeneration(tiny_llava_config(tokenizer)).eval()
    spread_weights(model, seed)
    return save_llava(folder, model, tokenizer)


def make_tiny_qwen(folder: Path, backend: str, seed: int = 0) -> Path:
    import transformers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = make_tokenizer(QWEN_SPECIALS)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIALS}
    text = dict(vocab_size=len(tokenizer) + 3, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, bos_token_id=None, eos_token_id=None,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]})
    if backend == "qwen2_vl":
        config_class, model_class = transformers.Qwen2VLConfig, transformers.Qwen2VLForConditionalGeneration
        vision = dict(depth=1, embed_dim=16, hidden_size=32, num_heads=2, mlp_ratio=2)
    else:
        config_class, model_class = transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration
        vision = dict(depth=1, hidden_size=16, out_hidden_size=32, intermediate_size=32, num_heads=2,
                      window_size=16, fullatt_block_indexes=[0])
    vision.update(patch_size=4, spatial_merge_size=2, temporal_patch_size=2)
    config = config_class(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                          video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                          vision_end_token_id=ids["<|vision_end|>"])
    model = model_class(config).eval()
    spread_weights(model, seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # 4-pixel patches merged 2x2: a 24x40 image resizes to 24x40 (multiples of 8) -> grid 1x6x10 -> 15 tokens
    Qwen2VLImageProcessorPil(patch_size=4, merge_size=2, temporal_patch_size=2, min_pixels=256,
                             max_pixels=1024).save_pretrained(folder)
    return folder


def random_images(count: int, height: int = 24, width: int = 40, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, height, width), generator=generator, dtype=torch.uint8)


QUESTIONS = [Question("orm", "a photo of a cat"), Question("potential", "two red dogs"), Question("prm", "a cat"),
             Question("clarity", "a photo of two dogs")]


@pytest.fixture(scope="module")
def llava_folder(tmp_path_factory) -> Path:
    return make_tiny_llava(tmp_path_factory.mktemp("llava"))


@pytest.fixture(scope="module")
def llava_judge(llava_folder):
    return build_judge(JudgeConfig(checkpoint=str(llava_folder), dtype="float32", batch_size=3), "cpu")


# ----------------------------------------------------------------------------
# Prompts

ORM_CHATML = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n<image> This image is generated by a prompt: a photo of a cat. Does this image accurately "
    "represent the prompt? Please answer yes or no without explanation.<|im_end|>\n"
    "<|im_start|>assistant\n"
)

POTENTIAL_CHATML = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n<image> \n The above image is a certain step  in the text to image generation process. "
    "This image is not the final generated one, and will keep iterating better. The image is generated by prompt "
    "'two red dogs.'\n        Do you think this image can be used to judge whether it has the potential to iterate "
    "to the image satisfied the prompt?(The image, which needn't to be confused  but can be clear and basically "
    "judged the object, can be used to judge the potential)\n        Answer yes or no with no explanation.(yes or "
    "no in lowercase and no full point)<|im_end|>\n"
    "<|im_start|>assistant\nyes<|im_end|>\n"
    "<|im_start|>user\nDo you think whether the image has the potential to iterate to the image satisfied the "
    "prompt? Please answer yes or no with no explanation.(yes or no in lowercase and no full point)<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def test_orm_renders_upstream_qwen_1_5_chatml():
    assert questions.chatml(questions.dialogue(Question("orm", "a photo of a cat"))) == ORM_CHATML


def test_potential_is_the_clarity_turn_answered_yes_then_a_second_user_turn():
    turns = questions.dialogue(Question("potential", "two red dogs"))
    assert [role for role, _ in turns] == ["user", "assistant", "user"]
    assert questions.chatml(turns) == POTENTIAL_CHATML


def test_prm_and_clarity_are_single_turns_with_the_image_first():
    prm = questions.dialogue(Question("prm", "a cat"))
    assert prm == [("user", "<image> This is an intermediate image in the generation process by a prompt: a cat. "
                            "Does this intermediate image accurately represent the prompt? Please answer yes or no "
                            "without explanation.")]
    assert questions.dialogue(Question("clarity", "a cat")) == questions.dialogue(Question("potential", "a cat"))[:1]
    with pytest.raises(ValueError, match="unknown question kind"):
        Question("reflection", "a cat")
    with pytest.raises(ValueError, match="exactly one"):
        questions.split_at_image(questions.chatml(questions.dialogue(Question("orm", "an <image> of a cat"))))


# ----------------------------------------------------------------------------
# LLaVA-OneVision, pad mode

def test_pad_pixels_pad_to_square_with_the_mean_colour(llava_judge):
    white = torch.full((1, 3, 8, 16), 255, dtype=torch.uint8)  # wide: 4 mean-colour rows above and below
    pixels = llava_judge.pad_pixels(white)
    assert pixels.shape == (1, 3, VISION_SIZE, VISION_SIZE)
    pad_value = (127 / 255 - 0.5) / 0.5  # fill int(0.5 * 255) = 127, then mean = std = 0.5
    assert torch.allclose(pixels[0, :, 0, :], torch.full((3, VISION_SIZE), pad_value), atol=1e-6)
    assert torch.allclose(pixels[0, :, VISION_SIZE // 2, :], torch.ones(3, VISION_SIZE), atol=1e-6)


def test_pad_mode_gives_one_crop_plus_newline(llava_judge):
    images = random_images(2)
    features = llava_judge.image_features(images)
    num_tokens = (VISION_SIZE // VISION_PATCH) ** 2 + 1  # SigLIP-384/14: 729 + 1 = 730
    assert [tuple(f.shape) for f in features] == [(num_tokens, 32), (num_tokens, 32)]
    ids = llava_judge.prompt_ids(QUESTIONS[0], len(features[0]))
    assert ids.count(llava_judge.model.config.image_token_id) == num_tokens
    # transformers' own one-crop path (images of a multi-image sample) gives the same features
    model = llava_judge.model
    reference = model.model.get_image_features(pixel_values=llava_judge.pad_pixels(images),
                                               image_sizes=torch.tensor([[VISION_SIZE, VISION_SIZE]] * 2),
                                               batch_num_images=torch.tensor([2])).pooler_output
    for ours, theirs in zip(features, reference):
        assert torch.allclose(ours, theirs, atol=1e-6)


def test_llava_batched_equals_one_by_one(llava_judge):
    images = random_images(4, seed=1)
    p_yes, p_no = llava_judge.yes_no_probs(images, QUESTIONS)  # batch_size 3: a batch of 3 and one of 1
    singles = [llava_judge.yes_no_probs(images[i:i + 1], QUESTIONS[i:i + 1]) for i in range(4)]
    assert torch.allclose(p_yes, torch.cat([yes for yes, _ in singles]), rtol=1e-4, atol=1e-7)
    assert torch.allclose(p_no, torch.cat([no for _, no in singles]), rtol=1e-4, atol=1e-7)
    assert p_yes.shape == p_no.shape == (4,) and p_yes.dtype == torch.float32
    assert ((p_yes > 0) & (p_no > 0) & (p_yes + p_no <= 1)).all()
    assert p_yes.max() > 2 * p_yes.min()  # the spread-out weights make answers depend on the input


def test_llava_probs_equal_a_direct_forward(llava_judge, llava_folder):
    from transformers import AutoTokenizer
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    model, tokenizer = llava_judge.model, AutoTokenizer.from_pretrained(llava_folder)
    images = random_images(2, seed=2)
    features = model.model.get_image_features(pixel_values=llava_judge.pad_pixels(images),
                                              image_sizes=torch.tensor([[VISION_SIZE, VISION_SIZE]] * 2),
                                              batch_num_images=torch.tensor([2])).pooler_output
    before, after = ORM_CHATML.split("<image>")
    input_ids = (tokenizer(before, add_special_tokens=False).input_ids + [model.config.image_token_id] * 17
                 + tokenizer(after, add_special_tokens=False).input_ids)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([input_ids]),
                       mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=[features[0]])}).logits
    probs = torch.softmax(logits[0, -1], dim=-1)
    vocab = tokenizer.get_vocab()
    p_yes, p_no = llava_judge.yes_no_probs(images[:1], [Question("orm", "a photo of a cat")])
    assert torch.allclose(p_yes, probs[vocab["yes"]], rtol=1e-5, atol=1e-8)
    assert torch.allclose(p_no, probs[vocab["no"]], rtol=1e-5, atol=1e-8)

    folded = build_judge(JudgeConfig(checkpoint=str(llava_folder), dtype="float32", fold_case=True))
    f_yes, f_no = folded.yes_no_probs(images[:1], [Question("orm", "a photo of a cat")])
    assert torch.allclose(f_yes, probs[vocab["yes"]] + probs[vocab["Yes"]], rtol=1e-5, atol=1e-8)
    assert torch.allclose(f_no, probs[vocab["no"]] + probs[vocab["No"]], rtol=1e-5, atol=1e-8)


def test_anyres_mode_tiles_and_batches(llava_folder, llava_judge):
    judge = build_judge(JudgeConfig(checkpoint=str(llava_folder), dtype="float32", batch_size=4,
                                    image_mode="anyres"))
    images = random_images(3, seed=3)
    features = judge.image_features(images)
    # 24x40 -> best pinpoint 32x64: 1x2 tiles of 4x4 features = a 4x8 map; unpadding keeps
    # int(40 * 4 / 24) = 6 columns; a newline per row: 4 * (6 + 1); the base crop adds 16
    assert [len(f) for f in features] == [16 + 4 * 7] * 3
    p_yes, _ = judge.yes_no_probs(images, QUESTIONS[:3])
    singles = torch.cat([judge.yes_no_probs(images[i:i + 1], QUESTIONS[i:i + 1])[0] for i in range(3)])
    assert torch.allclose(p_yes, singles, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(p_yes, llava_judge.yes_no_probs(images, QUESTIONS[:3])[0], rtol=1e-2)


# ----------------------------------------------------------------------------
# Qwen2-VL / Qwen2.5-VL

@pytest.mark.parametrize("backend", ["qwen2_vl", "qwen2_5_vl"])
def test_qwen_batched_equals_one_by_one_and_a_direct_forward(tmp_path, backend):
    from transformers import AutoTokenizer

    folder = make_tiny_qwen(tmp_path / backend, backend)
    judge = build_judge(JudgeConfig(backend=backend, checkpoint=str(folder), dtype="float32", batch_size=4))
    images = random_images(3, seed=4)
    p_yes, p_no = judge.yes_no_probs(images, QUESTIONS[:3])
    singles = [judge.yes_no_probs(images[i:i + 1], QUESTIONS[i:i + 1]) for i in range(3)]
    assert torch.allclose(p_yes, torch.cat([yes for yes, _ in singles]), rtol=1e-4, atol=1e-7)
    assert torch.allclose(p_no, torch.cat([no for _, no in singles]), rtol=1e-4, atol=1e-7)
    assert (p_yes + p_no <= 1).all() and p_yes.max() > 2 * p_yes.min()

    # the standard transformers call on a hand-written prompt: 24x40 pixels -> grid 1x6x10 -> 60 / 2**2 tokens
    model, tokenizer = judge.model, AutoTokenizer.from_pretrained(folder)
    processed = judge.image_processor(images=[img for img in images[:1].permute(0, 2, 3, 1).numpy()],
                                      return_tensors="pt")
    assert processed["image_grid_thw"].tolist() == [[1, 6, 10]]
    text = ORM_CHATML.replace("<image>", "<|vision_start|>" + "<|image_pad|>" * 15 + "<|vision_end|>")
    input_ids = torch.tensor([tokenizer(text, add_special_tokens=False).input_ids])
    with torch.no_grad():
        logits = model(input_ids=input_ids, pixel_values=processed["pixel_values"],
                       image_grid_thw=processed["image_grid_thw"],
                       mm_token_type_ids=(input_ids == model.config.image_token_id).long()).logits
    probs = torch.softmax(logits[0, -1], dim=-1)
    assert torch.allclose(p_yes[0], probs[tokenizer.get_vocab()["yes"]], rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------------------
# Loading and the registry

def test_missing_checkpoint_says_what_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="hf download example-org/no-such-judge"):
        build_judge(JudgeConfig(checkpoint="example-org/no-such-judge"))
    (tmp_path / "config.json").write_text("{}")  # a folder without preprocessor_config.json
    with pytest.raises(ValueError, match="convert_llava_next_reward"):
        build_judge(JudgeConfig(checkpoint=str(tmp_path)))


def test_registry_rejects_unknown_and_mismatched_backends(llava_folder):
    assert set(JUDGES) >= {"llava_onevision", "qwen2_vl", "qwen2_5_vl"}
    with pytest.raises(ValueError, match="unknown reward.backend"):
        build_judge(JudgeConfig(backend="gpt4v"))
    with pytest.raises(ValueError, match="set reward.backend=llava_onevision"):
        build_judge(JudgeConfig(backend="qwen2_vl", checkpoint=str(llava_folder)))
    with pytest.raises(ValueError, match="image_mode"):
        build_judge(JudgeConfig(checkpoint=str(llava_folder), image_mode="crop"))
