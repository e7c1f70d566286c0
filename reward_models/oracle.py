"""The GenEval evaluator as a yes/no judge: the oracle that bounds every verifier.

``--reward_model oracle`` runs best-of-N with this judge, so the kept image is correct whenever
any of the N candidates is (the first correct one). It is not a method of the paper; Table 1 of
the shapes world reports it as the upper bound of any verifier choosing among the same N
candidates, and each verifier's share of the oracle's gain over the baseline.

It answers from the prompt's GenEval metadata (``geneval/verdicts.py``), so it needs
``run.metadata_file`` and judges only prompts listed there. P(yes) is 1.0 for a correct image
and 0.0 otherwise.
"""
from __future__ import annotations

import torch

from geneval.config import GenEvalConfig
from geneval.verdicts import GenEvalVerdicts, metadata_by_prompt
from reward_models.judge import Question, check_batch

__all__ = ["GenEvalOracle", "metadata_by_prompt"]


class GenEvalOracle:
    """``YesNoJudge`` whose answer is GenEval's verdict on the image (only ``orm`` questions)."""

    def __init__(self, cfg: GenEvalConfig, metadata: list[dict], device: torch.device | str = "cpu"):
        self.verdicts = GenEvalVerdicts(cfg, metadata, device)
        """``verdicts(images, prompts) -> list[bool]``, the decision the answers come from."""

    def yes_no_probs(self, images: torch.Tensor, questions: list[Question]) -> tuple[torch.Tensor, torch.Tensor]:
        check_batch(images, questions)
        kinds = sorted({q.kind for q in questions} - {"orm"})
        if kinds:
            raise ValueError(f"the GenEval oracle judges final images only (the orm question), not {kinds}")
        p_yes = torch.tensor(self.verdicts(images, [q.prompt for q in questions]), dtype=torch.float32)
        return p_yes, 1.0 - p_yes
