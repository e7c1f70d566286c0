"""GenEval's verdict on in-memory images: correct or not, for prompts whose metadata is known.

The evaluator (``geneval/evaluate.py``) scores image folders; this is the same decision
(detector, ``filter_detections``, ``evaluate_image``) on a ``uint8 [B, 3, H, W]`` batch, for
callers that judge images before they are written: the oracle judge
(``reward_models/oracle.py``) and the N-curve script.
"""
from __future__ import annotations

import torch

from geneval.config import GenEvalConfig
from geneval.detectors import build_detector
from geneval.rules import RuleConfig, evaluate_image, filter_detections


def metadata_by_prompt(records: list[dict]) -> dict[str, dict]:
    """Prompt text -> its metadata; ``ValueError`` if one prompt has two different records."""
    by_prompt: dict[str, dict] = {}
    for record in records:
        known = by_prompt.setdefault(record["prompt"], record)
        if known != record:
            raise ValueError(f"prompt {record['prompt']!r} has two different metadata records; the oracle "
                             "cannot tell which one to apply")
    return by_prompt


class GenEvalVerdicts:
    """``verdicts(images, prompts) -> list[bool]``: GenEval's decision on each image for its prompt."""

    def __init__(self, cfg: GenEvalConfig, metadata: list[dict], device: torch.device | str = "cpu"):
        self.metadata = metadata_by_prompt(metadata)
        classes = sorted({clause["class"] for record in metadata
                          for clause in record.get("include", []) + record.get("exclude", [])})
        self.detector, self.colors = build_detector(cfg, torch.device(device), classes)
        self.rules = RuleConfig.from_geneval(cfg)

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> list[bool]:
        unknown = sorted({p for p in prompts if p not in self.metadata})
        if unknown:
            raise ValueError(f"the oracle has no GenEval metadata for {unknown[:3]}; it judges only the prompts "
                             "of run.metadata_file")
        arrays = [image.permute(1, 2, 0).cpu().numpy() for image in images]
        verdicts = []
        for array, prompt, detections in zip(arrays, prompts, self.detector.detect(arrays)):
            record = self.metadata[prompt]
            colors_of = None if self.colors is None else \
                (lambda name, found, array=array: self.colors.classify(array, found, name))
            detected = filter_detections(record, detections, self.rules)
            verdicts.append(evaluate_image(record, detected, self.rules, colors_of=colors_of)[0])
        return verdicts
