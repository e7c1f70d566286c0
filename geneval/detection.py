"""The small interface between detector backends and the GenEval rules engine.

A backend turns images into raw ``Detection`` lists (all classes, unfiltered); the rules
engine (``geneval.rules``) applies GenEval's thresholds, caps and NMS and makes the decision.
Colour is either read by the detector itself (the shapes world) or by a ``ColorClassifier``
(CLIP, as GenEval does) on the objects a colour clause inspects.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class Detection:
    label: str
    """Class name from the suite's vocabulary (e.g. ``"dog"`` or ``"circle"``)."""
    box: tuple[float, float, float, float]
    """``(x1, y1, x2, y2)`` in pixels; mask-derived boxes use mmdet's ``x_max + 1`` convention."""
    score: float
    mask: np.ndarray | None = None
    """Boolean ``[H, W]`` instance mask at image size, or None when the backend has none."""
    color: str | None = None
    """One of ``geneval.COLORS`` when the detector reads colour itself, else None."""


class Detector(Protocol):
    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """Raw detections for each ``uint8 [H, W, 3]`` RGB image, any order, no threshold."""
        ...


class ColorClassifier(Protocol):
    def classify(self, image: np.ndarray, detections: list[Detection], classname: str) -> list[str]:
        """The colour name of each detection of ``classname`` in ``image``."""
        ...


# GenEval's colour vocabulary, in the order of prompts/create_prompts.py and evaluate_images.py.
COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"]
