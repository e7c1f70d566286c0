"""A detector for the shapes world that needs no learned weights.

1. Every pixel takes the nearest palette colour; pixels far from all of them, and pixels
   nearest the background, are background.
2. Each colour's 8-connected components of at least ``MIN_AREA`` pixels are objects.
3. Each class is re-rendered into the component's box with the scene renderer; the class is
   the best mask IoU and the score is that IoU. A clean render of a shape scores 1.0, a
   blurred or malformed blob scores lower, so GenEval's thresholds (0.3, 0.9 for counting)
   keep their meaning: counting needs crisp objects.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from geneval.detection import COLORS, Detection
from shapes.render import shape_mask
from shapes.world import BACKGROUND, PALETTE, SHAPES

MIN_AREA = 12
"""Components smaller than this many pixels are noise (the smallest shape covers ~150)."""
MAX_COLOR_DISTANCE = 90.0
"""Pixels further than this (RGB Euclidean) from every palette colour are background."""

_PALETTE_RGB = np.array([BACKGROUND] + [PALETTE[c] for c in COLORS], dtype=np.float32)  # [11, 3]
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def quantize_colors(image: np.ndarray) -> np.ndarray:
    """``int [H, W]`` palette index per pixel: 0 background, 1 + COLORS index otherwise."""
    pixels = image.astype(np.float32)[..., None, :]  # [H, W, 1, 3]
    distance = np.linalg.norm(pixels - _PALETTE_RGB, axis=-1)  # [H, W, 11]
    index = distance.argmin(-1)
    index[distance.min(-1) > MAX_COLOR_DISTANCE] = 0
    return index


@lru_cache(maxsize=4096)
def _template(shape: str, width: int, height: int) -> np.ndarray:
    return shape_mask(shape, width, height)


def classify_component(mask: np.ndarray) -> tuple[str, float]:
    """(best class, its IoU) for a boolean component mask cropped tight to its box."""
    height, width = mask.shape
    best_shape, best_iou = SHAPES[0], -1.0
    for shape in SHAPES:
        template = _template(shape, width, height)
        iou = np.logical_and(mask, template).sum() / np.logical_or(mask, template).sum()
        if iou > best_iou:
            best_shape, best_iou = shape, float(iou)
    return best_shape, best_iou


def detect_image(image: np.ndarray) -> list[Detection]:
    """All shape detections in one ``uint8 [H, W, 3]`` image."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape [H, W, 3], got {image.shape}")
    color_index = quantize_colors(image)
    detections = []
    for palette_index, color in enumerate(COLORS, start=1):
        components, count = ndimage.label(color_index == palette_index, structure=_EIGHT_CONNECTED)
        for component_slice, label in zip(ndimage.find_objects(components), range(1, count + 1)):
            crop = components[component_slice] == label
            if crop.sum() < MIN_AREA:
                continue
            shape, score = classify_component(crop)
            rows, cols = component_slice
            mask = np.zeros(color_index.shape, dtype=bool)
            mask[component_slice] = crop
            box = (float(cols.start), float(rows.start), float(cols.stop), float(rows.stop))
            detections.append(Detection(label=shape, box=box, score=score, mask=mask, color=color))
    return detections


class ShapesDetector:
    """``Detector`` for shapes-world images; reads colour itself (no colour classifier needed)."""

    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        return [detect_image(np.asarray(image)) for image in images]


def scene_key(detections: list[Detection]) -> list[tuple]:
    """Order-free identity of a scene: sorted (class, colour, integer box) of each object."""
    return sorted((d.label, d.color, tuple(int(v) for v in d.box)) for d in detections)
