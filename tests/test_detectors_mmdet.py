"""Tests of the optional ``mmdet`` GenEval backend (geneval/detectors/mmdet.py).

The detector tests need the mmdet extra (``bash scripts/install_mmdet.sh``) and are skipped
without it; they build the real Swin-S config with random weights, save it as a checkpoint
with numpy objects in its meta (like the official one) and load it back through
``load_model``. The open_clip test needs open_clip (same extra). The error-path tests run
everywhere.

Run: ``python -m pytest -q tests/test_detectors_mmdet.py``
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from geneval.config import GenEvalConfig
from geneval.detection import COLORS, Detection
from geneval.detectors import mmdet as backend
from geneval.detectors.clip_color import CLIPColorClassifier, clip_preprocess
from geneval.suites import COCO_CLASSES


def _images(n: int, size: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def _mask_box(mask: np.ndarray) -> tuple[float, ...]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


# ----------------------------------------------------------------------------
# Error paths (no mmdet needed)

def test_missing_checkpoint_names_the_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="c9d0c4f2.pth"):
        backend.checkpoint_state(str(tmp_path / "mask2former.pth"))


def test_missing_extra_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mmdet", None)  # makes `import mmdet` raise ImportError
    with pytest.raises(ImportError, match="scripts/install_mmdet.sh"):
        backend.build(GenEvalConfig(detector="mmdet"), torch.device("cpu"), ["dog"])


def test_other_clip_is_refused():
    cfg = GenEvalConfig(detector="mmdet", clip_path="some/other-clip")
    with pytest.raises(ValueError, match="open_clip"):
        backend.build(cfg, torch.device("cpu"), ["dog"])


# ----------------------------------------------------------------------------
# The detector with random weights

@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    pytest.importorskip("mmdet")
    from mmdet.apis import init_detector

    config = backend._config_class().fromfile(backend.config_path())
    config.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = init_detector(config, None, device="cpu")
    path = tmp_path_factory.mktemp("mmdet") / "random.pth"
    # numpy in meta, as in the official checkpoints: torch.load(weights_only=True) would refuse it.
    torch.save({"state_dict": model.state_dict(), "meta": {"epoch": np.int64(50)}}, path)
    return model, str(path)


def _detector(model, batch_size: int = 2) -> backend.MMDetMask2FormerDetector:
    # A (64, 64) test scale: 0.1 s instead of 4 s per image.
    if backend.mmdet_major() == 2:
        model.cfg.data.test.pipeline[1].img_scale = (64, 64)  # MultiScaleFlipAug, read by inference_detector
        return backend.MMDetMask2FormerDetector(model, list(COCO_CLASSES), batch_size)
    pipeline = backend.inference_pipeline(model.cfg, scale=(64, 64))
    return backend.MMDetMask2FormerDetector(model, list(COCO_CLASSES), batch_size, pipeline)


def test_loaded_checkpoint_detects_like_the_saved_model(random_model):
    model, path = random_model
    loaded = backend.load_model(path, torch.device("cpu"))
    images = _images(2)
    results = _detector(loaded).detect(images)
    expected = _detector(model).detect(images)
    assert len(results) == 2
    for detections, reference in zip(results, expected):
        assert len(detections) == 100  # test_cfg.max_per_image
        assert [(d.label, d.box) for d in detections] == [(d.label, d.box) for d in reference]
        for d in detections:
            assert d.label in COCO_CLASSES
            assert 0.0 <= d.score <= 1.0
            assert d.mask.dtype == bool and d.mask.shape == (64, 64)
            assert d.box == _mask_box(d.mask)


def test_batching_gives_the_same_detections(random_model):
    model, _ = random_model
    detector = _detector(model)
    images = _images(3)
    for image, expected in zip(images, detector.detect(images)):
        (single,) = detector.detect([image])
        assert [(d.label, d.box) for d in single] == [(d.label, d.box) for d in expected]
        assert np.allclose([d.score for d in single], [d.score for d in expected], atol=1e-5)


def test_checkpoint_for_another_model_is_refused(random_model, tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"backbone.some.weight": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="lacks"):
        backend.load_model(str(path), torch.device("cpu"))


# ----------------------------------------------------------------------------
# open_clip colours

def test_open_clip_val_transform_matches_clip_preprocess():
    open_clip = pytest.importorskip("open_clip")
    model, _, transform = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    rng = np.random.default_rng(2)
    for width, height in [(37, 91), (300, 200), (224, 224), (5, 3)]:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        assert torch.allclose(transform(image), clip_preprocess(image, 224), atol=1e-5)
    encoder = backend.OpenCLIPEncoder(model.eval(), transform, open_clip.get_tokenizer("ViT-B-32"), torch.device("cpu"))
    colors = CLIPColorClassifier(encoder, torch.device("cpu"))
    mask = np.zeros((32, 32), dtype=bool)
    mask[4:20, 8:30] = True
    names = colors.classify(_images(1, size=32)[0], [Detection("dog", (8, 4, 30, 20), 0.9, mask)], "dog")
    assert len(names) == 1 and names[0] in COLORS


def test_open_clip_weights_are_required_locally_for_both_layouts(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    url = "https://openaipublic.azureedge.net/clip/models/b8cca3/ViT-L-14.pt"  # open_clip 2.x: a URL
    with pytest.raises(FileNotFoundError, match="wget -P ~/.cache/clip"):
        backend.require_open_clip_weights({"url": url, "hf_hub": ""})
    (tmp_path / ".cache" / "clip").mkdir(parents=True)
    (tmp_path / ".cache" / "clip" / "ViT-L-14.pt").write_bytes(b"weights")
    backend.require_open_clip_weights({"url": url, "hf_hub": ""})
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="hf download timm/vit_large_patch14_clip_224.openai"):
        backend.require_open_clip_weights({"hf_hub": "timm/vit_large_patch14_clip_224.openai/"})
