"""The ``shapes`` backend: the weight-free shapes-world detector (shapes.detect)."""
from __future__ import annotations

import torch

from geneval.config import GenEvalConfig
from geneval.detection import ColorClassifier, Detector
from shapes.detect import ShapesDetector
from shapes.world import SHAPES


def build(cfg: GenEvalConfig, device: torch.device, classes: list[str]) -> tuple[Detector, ColorClassifier | None]:
    unknown = sorted(set(classes) - set(SHAPES))
    if unknown:
        raise ValueError(f"the shapes detector only knows {SHAPES}; the prompts ask for {unknown}. "
                         "Use geneval.detector=hf for real images.")
    return ShapesDetector(), None


def describe(cfg: GenEvalConfig) -> str:
    return "shapes: the shapes-world detector (no weights; not GenEval's detector)"
