"""The GenEval evaluator as a yes/no judge: the oracle that bounds every verifier.

``--reward_model oracle`` runs best-of-N with this judge, so the kept image is correct whenever
any of the N candidates is (the first correct one). It is not a method of the paper; Table 1 of
the shapes world reports it as the upper bound of any verifier choosing among the same N
candidates, and each verifier's share of the oracle's gain over the baseline.

It answers from the prompt's GenEval metadata, so it needs ``run.metadata_file`` and judges only
prompts listed there. P(yes) is 1.0 for a correct image and 0.0 otherwise.
"""
from __future__ import annotations

import torch

from geneval.config import GenEvalConfig
from geneval.detectors import build_detector
from geneval.prompts import load_metadata
from geneval.rules import RuleConfig, evaluate_image, filter_detections
from reward_models.judge import Question, check_batch


def metadata_by_prompt(records: list[dict]) -> dict[str, dict]:
    """Prompt text -> its metadata; ``ValueError`` if one prompt has two different records."""
    by_prompt: dict[str, dict] = {}
    for record in records:
        known = by_prompt.setdefault(record["prompt"], record)
        if known != record:
            raise ValueError(f"prompt {record['prompt']!r} has two different metadata records; the oracle "
                             "cannot tell which one to apply")
    return by_prompt


class GenEvalOracle:
    """``YesNoJudge`` whose answer is GenEval's verdict on the image (only ``orm`` questions)."""

    def __init__(self, cfg: GenEvalConfig, metadata: list[dict], device: torch.device | str = "cpu"):
        self.metadata = metadata_by_prompt(metadata)
        classes = sorted({clause["class"] for record in metadata
                          for clause in record.get("include", []) + record.get("exclude", [])})
        self.detector, self.colors = build_detector(cfg, torch.device(device), classes)
        self.rules = RuleConfig.from_geneval(cfg)

    @classmethod
    def from_files(cls, cfg: GenEvalConfig, metadata_file: str, device: torch.device | str = "cpu"
                   ) -> "GenEvalOracle":
        return cls(cfg, load_metadata(metadata_file), device)

    def verdicts(self, images: torch.Tensor, prompts: list[str]) -> list[bool]:
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

    def yes_no_probs(self, images: torch.Tensor, questions: list[Question]) -> tuple[torch.Tensor, torch.Tensor]:
        check_batch(images, questions)
        kinds = sorted({q.kind for q in questions} - {"orm"})
        if kinds:
            raise ValueError(f"the GenEval oracle judges final images only (the orm question), not {kinds}")
        p_yes = torch.tensor(self.verdicts(images, [q.prompt for q in questions]), dtype=torch.float32)
        return p_yes, 1.0 - p_yes

