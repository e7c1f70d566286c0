"""The ``hf`` backend's mmdet 2.x preprocessing (geneval/detectors/hf.py ``mmdet2_inputs``), by hand.

GenEval's test pipeline (mmdet 2.x configs/mask2former/mask2former_r50_lsj_8x2_50e_coco.py):
keep-ratio Resize to fit (1333, 800) with cv2 bilinear on uint8, Pad(size_divisor=32,
pad_val=128), then Normalize. tests/test_mmdet_convert.py also checks it byte for byte against
mmdet's own pipeline on a 50 x 90 image.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geneval.config import GenEvalConfig
from geneval.detectors.hf import HFMask2FormerDetector, PIXEL_MEAN, PIXEL_STD, mmdet2_inputs, mmdet3_inputs

# A 2 x 3 image (not square) whose 2x bilinear upscale is exact in integers, so the expected
# pixels below are plain arithmetic. cv2 (half-pixel centres, edges clamped) samples source
# rows at -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1): row weights (1, 0), (.75, .25),
# (.25, .75), (0, 1); columns likewise over 3 source columns.
SOURCE = np.array([[220, 20, 208],
                   [152, 0, 60]])
EXPECTED = np.array([[220, 170, 70, 67, 161, 208],   # e.g. (1, 1): .75 * (.75*220 + .25*20) + .25 * (.75*152 + .25*0)
                     [203, 156, 62, 54, 132, 171],   #     = .75 * 170 + .25 * 114 = 156
                     [169, 128, 46, 28, 74, 97],
                     [152, 114, 38, 15, 45, 60]])


def _image() -> np.ndarray:
    # Channels: the values, their complement (also exact), and a constant.
    return np.stack([SOURCE, 255 - SOURCE, np.full_like(SOURCE, 7)], axis=-1).astype(np.uint8)


def _normalised(values: np.ndarray, channel: int) -> np.ndarray:
    return (values - PIXEL_MEAN[channel]) / PIXEL_STD[channel]


def test_hand_computed_resize_pad_then_normalise():
    pixels, resized_hw = mmdet2_inputs([_image()], scale=(6, 4))  # fits 3 x 2 into 6 x 4: factor 2
    assert resized_hw == (4, 6)
    assert pixels.shape == (1, 3, 32, 32)  # padded to the size divisor 32
    expected = [EXPECTED, 255 - EXPECTED, np.full_like(EXPECTED, 7)]
    for channel in range(3):
        plane = pixels[0, channel].numpy()
        assert np.allclose(plane[:4, :6], _normalised(expected[channel], channel), atol=1e-5)
        # Padding is grey 128 before normalising (mmdet 2.x), not 0 after it (mmdet 3.x).
        pad = _normalised(np.array(128.0), channel)
        assert np.allclose(plane[4:, :], pad, atol=1e-6) and np.allclose(plane[:, 6:], pad, atol=1e-6)


def test_resize_is_rounded_to_uint8_as_cv2_does():
    import cv2

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 90, 3), dtype=np.uint8)  # -> 741 x 1333, padded 768 x 1344
    pixels, resized_hw = mmdet2_inputs([image])
    assert resized_hw == (741, 1333) and pixels.shape[-2:] == (768, 1344)
    std, mean = torch.tensor(PIXEL_STD).view(3, 1, 1), torch.tensor(PIXEL_MEAN).view(3, 1, 1)
    grey = pixels[0] * std + mean
    assert torch.allclose(grey, grey.round(), atol=1e-3)  # whole grey levels: the resize was rounded
    resized = cv2.resize(image, (1333, 741), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(grey.round().to(torch.uint8).permute(1, 2, 0).numpy()[:741, :1333], resized)
    # mmdet 3.x order differs: float resize (up to ~0.8 grey levels away) and zero padding.
    other, _ = mmdet3_inputs([image])
    assert other.shape == pixels.shape
    assert not torch.allclose(other[..., :741, :1333], pixels[..., :741, :1333], atol=1e-3)
    assert torch.all(other[..., 741:, :] == 0)


def test_square_images_agree_up_to_rounding_between_orders():
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # -> 800 x 800, no padding
    a, _ = mmdet2_inputs([image])
    b, _ = mmdet3_inputs([image])
    assert a.shape == b.shape == (1, 3, 800, 800)
    assert (a - b).abs().max() * max(PIXEL_STD) < 1.0  # less than one grey level apart


def test_unknown_preprocessing_is_refused():
    with pytest.raises(ValueError, match="geneval.preprocess='mmdet4'"):
        HFMask2FormerDetector(None, [], [], torch.device("cpu"), preprocessing="mmdet4")
    assert GenEvalConfig().preprocess == "mmdet2"
