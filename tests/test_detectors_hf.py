"""Tests of the ``hf`` GenEval backend (geneval/detectors/hf.py, geneval/detectors/clip_color.py).

Tiny random Mask2Former and CLIP models and an offline word-level tokenizer are saved with
``save_pretrained`` and loaded back through ``build``. Random weights make the detections
meaningless, so the tests check the mmdet conventions and invariants that could break.

Run: ``python -m pytest -q tests/test_detectors_hf.py``
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from geneval.config import GenEvalConfig
from geneval.detection import COLORS, Detection
from geneval.detectors.clip_color import (CLIPColorClassifier, OPENAI_MEAN, OPENAI_STD, center_crop_box,
                                          clip_preprocess, color_texts, object_crop, resized_size)
from geneval.detectors.hf import (HFMask2FormerDetector, build, geneval_label_names, instance_results,
                                  mask_boxes, pretrained_folder, rescaled_size)
from geneval.suites import COCO_CLASSES

# HF / detectron2 / VOC spellings that GenEval spells differently.
HF_SPELLINGS = {"computer mouse": "mouse", "tv remote": "remote", "computer keyboard": "keyboard",
                "motorcycle": "motorbike"}
TOKENIZER_WORDS = ["<pad>", "<unk>", "<bos>", "<eos>", "a", "photo", "of", "-", "colored", "object",
                   *COLORS, "dog", "cat"]


# ----------------------------------------------------------------------------
# Tiny checkpoints

def _save_tiny_mask2former(folder) -> None:
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    swin = SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4, image_size=64,
                      out_features=["stage1", "stage2", "stage3", "stage4"])
    id2label = {i: HF_SPELLINGS.get(name, name) for i, name in enumerate(COCO_CLASSES)}
    config = Mask2FormerConfig(backbone_config=swin, feature_size=32, mask_feature_size=32, hidden_dim=32,
                               encoder_feedforward_dim=32, encoder_layers=1, decoder_layers=2,
                               num_attention_heads=2, dim_feedforward=32, num_queries=8,
                               id2label=id2label, label2id={v: k for k, v in id2label.items()})
    torch.manual_seed(0)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(folder)


def _save_tiny_clip(folder) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(TOKENIZER_WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # "red-colored" -> red, -, colored
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])])
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(folder)
    text = dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=16, pad_token_id=vocab["<pad>"],
                bos_token_id=vocab["<bos>"], eos_token_id=vocab["<eos>"])
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  image_size=32, patch_size=8)
    torch.manual_seed(1)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(folder)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_models")
    _save_tiny_mask2former(root / "m2f")
    _save_tiny_clip(root / "clip")
    cfg = GenEvalConfig(detector="hf", detector_path=str(root / "m2f"), clip_path=str(root / "clip"), batch_size=2)
    with pytest.warns(UserWarning, match="GenEval-style scores, not official GenEval numbers"):
        detector, colors = build(cfg, torch.device("cpu"), list(COCO_CLASSES))
    return cfg, detector, colors


def _images(n: int, size: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


# ----------------------------------------------------------------------------
# mmdet conventions

def test_rescaled_size_follows_mmcv_imrescale():
    assert rescaled_size(256, 256) == (800, 800)
    assert rescaled_size(512, 1024) == (667, 1333)  # factor 1333/1024: 512 * 1.3018 = 666.5 rounds up
    assert rescaled_size(64, 48) == (1067, 800)  # factor 800/48: 1066.67 -> 1067
    assert rescaled_size(800, 1333) == (800, 1333)


def test_mask_boxes_use_mask2bbox_plus_one_convention():
    masks = torch.zeros(3, 4, 6, dtype=torch.bool)
    masks[0, 1, 2] = masks[0, 3, 5] = True
    masks[2] = True
    assert mask_boxes(masks).tolist() == [[2, 1, 6, 4], [0, 0, 0, 0], [0, 0, 6, 4]]


def test_instance_results_score_label_and_padding_crop():
    # One query, two classes + no-object (the likeliest, but never a label): probabilities
    # e/Z and 1/Z for the real classes, Z = 1 + e + e^2.
    class_logits = torch.tensor([[1.0, 0.0, 2.0]])
    # Mask logits already at the padded size (8, 8); the image is the top 4 rows. The padding rows
    # are strongly positive: if they were not cut off before resizing they would leak into the mask.
    mask_logits = torch.full((1, 8, 8), 9.0)
    mask_logits[0, :4] = -3.0
    mask_logits[0, 1, 2] = 2.0
    mask_logits[0, 2, 6] = 3.0
    mask_logits[0, 0, 0] = 0.0  # the binary mask is logit > 0, so this pixel is out
    labels, scores, boxes, masks = instance_results(class_logits, mask_logits, (8, 8), (4, 8), (4, 8),
                                                    max_per_image=1)
    expected_mask = torch.zeros(4, 8, dtype=torch.bool)
    expected_mask[1, 2] = expected_mask[2, 6] = True
    assert labels.tolist() == [0]
    assert torch.equal(masks[0], expected_mask)
    assert boxes.tolist() == [[2, 1, 7, 3]]
    sigmoid = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = math.e / (1 + math.e + math.e**2) * (sigmoid(2.0) + sigmoid(3.0)) / (2 + 1e-6)
    assert scores.item() == pytest.approx(expected, rel=1e-6)


def test_label_names_map_checkpoint_spellings_onto_geneval():
    id2label = {i: HF_SPELLINGS.get(name, name) for i, name in enumerate(COCO_CLASSES)}
    assert id2label[64] == "mouse" and id2label[3] == "motorbike"
    assert geneval_label_names(id2label, ["computer mouse", "dog"]) == COCO_CLASSES
    assert geneval_label_names({"1": "Teddy_Bear", "0": "TV-Monitor"}, []) == ["tv", "teddy bear"]
    with pytest.raises(ValueError, match="LABEL_0"):
        geneval_label_names({0: "LABEL_0", 1: "dog"}, ["dog"])
    with pytest.raises(ValueError, match=r"cannot detect \['cat'\]"):
        geneval_label_names({0: "dog"}, ["cat", "dog"])


# ----------------------------------------------------------------------------
# The detector, loaded through build()

def _mask_box(mask: np.ndarray) -> tuple[float, ...]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def test_detections_follow_mmdet_conventions(built):
    _, detector, colors = built
    assert isinstance(detector, HFMask2FormerDetector) and isinstance(colors, CLIPColorClassifier)
    assert detector.label_names == COCO_CLASSES  # HF spellings were mapped
    images = _images(2)
    results = detector.detect(images)
    assert len(results) == 2
    for detections in results:
        assert len(detections) == 100  # top 100 of 8 queries x 80 classes
        assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)
        for d in detections:
            assert d.label in COCO_CLASSES
            assert 0.0 <= d.score <= 1.0
            assert d.mask.dtype == bool and d.mask.shape == (64, 64)
            assert d.box == _mask_box(d.mask)
            if not d.mask.any():
                assert d.score == 0.0
    assert any(d.mask.any() for d in results[0])


def test_batching_gives_the_same_detections(built):
    _, detector, _ = built
    images = _images(3)
    batched = detector.detect(images)  # batch_size 2: batches [0, 1] and [2]
    for image, expected in zip(images, batched):
        (single,) = detector.detect([image])
        assert [(d.label, d.box) for d in single] == [(d.label, d.box) for d in expected]
        assert np.allclose([d.score for d in single], [d.score for d in expected], atol=1e-6)
        assert all(np.array_equal(a.mask, b.mask) for a, b in zip(single, expected))


def test_only_requested_classes_are_returned(built):
    _, detector, _ = built
    image = _images(1)[0]
    (everything,) = detector.detect([image])
    wanted = {d.label for d in everything[:3]}
    subset = HFMask2FormerDetector(detector.model, detector.label_names, sorted(wanted), detector.device)
    (kept,) = subset.detect([image])
    assert [(d.label, d.box, d.score) for d in kept] == [(d.label, d.box, d.score) for d in everything
                                                         if d.label in wanted]


def test_detector_rejects_non_rgb_uint8(built):
    _, detector, _ = built
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\]"):
        detector.detect([np.zeros((8, 8), dtype=np.uint8)])


def test_missing_checkpoint_says_what_to_download(tmp_path):
    cfg = GenEvalConfig(detector_path=str(tmp_path / "no_such_folder"))
    with pytest.raises(FileNotFoundError, match="hf download facebook/mask2former-swin-small-coco-instance"):
        build(cfg, torch.device("cpu"), ["dog"])
    cache = tmp_path / "empty_cache"
    with pytest.raises(FileNotFoundError) as err:
        pretrained_folder("openai/clip-vit-large-patch14", "clip_path", "unused/default", cache_dir=str(cache))
    assert str(cache) in str(err.value) and "hf download openai/clip-vit-large-patch14" in str(err.value)


# ----------------------------------------------------------------------------
# Colour classification

def test_color_texts_are_genevals_templates():
    assert color_texts("tv remote", "red") == ["a photo of a red tv remote", "a photo of a red-colored tv remote",
                                               "a photo of a red object"]


def test_object_crop_paints_outside_the_mask_and_crops_to_the_box():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    mask = np.zeros((10, 12), dtype=bool)
    mask[3:6, 2:5] = True
    mask[8, 6] = True
    detection = Detection("dog", (2.0, 3.0, 7.0, 9.0), 0.9, mask)
    crop = np.asarray(object_crop(Image.fromarray(pixels), detection))
    assert crop.shape == (6, 5, 3)  # rows 3..8, cols 2..6
    inside = mask[3:9, 2:7]
    assert np.array_equal(crop[inside], pixels[3:9, 2:7][inside])
    assert (crop[~inside] == 0x99).all()  # "#999" is (153, 153, 153)
    kept = np.asarray(object_crop(Image.fromarray(pixels), detection, bgcolor="original"))
    assert np.array_equal(kept, pixels[3:9, 2:7])
    whole = np.asarray(object_crop(Image.fromarray(pixels), detection, crop=False))
    assert whole.shape == (10, 12, 3) and (whole[~mask] == 0x99).all()


def test_clip_preprocess_resizes_short_side_and_center_crops():
    assert resized_size(4, 10, 8) == (8, 20)
    assert resized_size(30, 7, 224) == (960, 224)  # int(224 * 30 / 7) = 960
    assert center_crop_box(8, 20, 8) == (0, 6, 8, 14)
    assert center_crop_box(11, 8, 8) == (2, 0, 10, 8)  # round(1.5) = 2
    assert center_crop_box(8, 13, 8) == (0, 2, 8, 10)  # Python's round(2.5) = 2, as in torchvision
    pixels = clip_preprocess(Image.new("RGB", (5, 13), (255, 0, 51)), 8)
    assert pixels.shape == (3, 8, 8)
    expected = [(1.0 - OPENAI_MEAN[0]) / OPENAI_STD[0], -OPENAI_MEAN[1] / OPENAI_STD[1],
                (0.2 - OPENAI_MEAN[2]) / OPENAI_STD[2]]
    assert torch.allclose(pixels, torch.tensor(expected).view(3, 1, 1).expand(3, 8, 8), atol=1e-6)


def test_color_head_is_normalised_mean_of_normalised_templates(built):
    _, _, colors = built
    head = colors.head("dog")
    assert head.shape == (8, len(COLORS))
    assert colors.head("dog") is head  # cached
    for j, color in enumerate(COLORS):
        with torch.no_grad():
            # One text per forward: no padding, so this also checks the batched head's padding.
            single = torch.cat([colors.encoder.encode_text([text]) for text in color_texts("dog", color)])
        column = F.normalize(F.normalize(single, dim=-1).mean(dim=0), dim=0)
        assert torch.allclose(head[:, j], column, atol=1e-5)
    assert not torch.allclose(colors.head("cat"), head)


def test_batched_color_classification_matches_per_crop(built):
    _, _, colors = built
    image = _images(1, size=40)[0]
    masks = [np.zeros((40, 40), dtype=bool) for _ in range(3)]
    masks[0][5:20, 5:15] = True
    masks[1][10:40, 0:40] = True
    masks[2][30:33, 20:39] = True
    detections = [Detection("dog", box, 0.9, m) for box, m in
                  zip([(5, 5, 15, 20), (0, 10, 40, 40), (20, 30, 39, 33)], masks)]
    batched = colors.logits(image, detections, "dog")
    assert batched.shape == (3, len(COLORS))
    singles = torch.cat([colors.logits(image, [d], "dog") for d in detections])
    assert torch.allclose(batched, singles, atol=1e-4)
    names = colors.classify(image, detections, "dog")
    assert names == [COLORS[i] for i in singles.argmax(dim=1).tolist()]
    assert colors.classify(image, [], "dog") == []


def test_classifier_scores_the_masked_box_crop(built):
    _, _, colors = built
    image = _images(1, size=40)[0]
    mask = np.zeros((40, 40), dtype=bool)
    mask[8:30, 12:20] = True
    mask[10:14, 20:26] = True
    detection = Detection("dog", (12, 8, 26, 30), 0.9, mask)
    # The same object, already cut out: a 14x22 image that is the whole object.
    cut = np.asarray(object_crop(Image.fromarray(image), detection))
    whole = Detection("dog", (0, 0, 14, 22), 0.9, np.ones((22, 14), dtype=bool))
    assert torch.allclose(colors.logits(image, [detection], "dog"), colors.logits(cut, [whole], "dog"), atol=1e-5)
