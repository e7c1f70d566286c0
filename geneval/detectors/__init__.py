"""Detector backends behind one small interface (``geneval.detection.Detector``).

``DETECTORS`` maps a backend name to the module that builds it; modules are imported only
when chosen, so the shapes world never imports transformers and the optional mmdet extra
is needed only for ``mmdet``.
"""
from __future__ import annotations

import importlib

import torch

from geneval.config import GenEvalConfig
from geneval.detection import ColorClassifier, Detector

DETECTORS = {
    "shapes": "geneval.detectors.shapes",
    "hf": "geneval.detectors.hf",
    "mmdet": "geneval.detectors.mmdet",
}


def build_detector(cfg: GenEvalConfig, device: torch.device, classes: list[str]
                   ) -> tuple[Detector, ColorClassifier | None]:
    """The configured detector and, when it does not read colour itself, its colour classifier."""
    if cfg.detector not in DETECTORS:
        raise ValueError(f"unknown geneval.detector {cfg.detector!r}; valid: {sorted(DETECTORS)}")
    return importlib.import_module(DETECTORS[cfg.detector]).build(cfg, device, classes)


def describe_detector(cfg: GenEvalConfig) -> str:
    """One line naming the detector, its weights and whether its scores are official GenEval numbers.

    Written into every results record and summary; loads no weights.
    """
    if cfg.detector not in DETECTORS:
        raise ValueError(f"unknown geneval.detector {cfg.detector!r}; valid: {sorted(DETECTORS)}")
    return importlib.import_module(DETECTORS[cfg.detector]).describe(cfg)
