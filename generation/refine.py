"""Self-correction for PARM++: decode some tokens of a finished image again, keep the others.

The step-wise protocol starts from nothing; PARM++ (paper section 5) needs to redo part of a
finished image. Two members of the ``generation.base.Generator`` protocol serve it, and every
backend implements both (tiny: ``generation/tiny/backend.py``, both orders; Show-o, mask order;
LlamaGen and Janus-Pro, raster order):

    generator.restart(prompts, tokens, regenerate, generators) -> Canvas
    generator.final_tokens(canvas) -> long [B, N]

This module holds their shared semantics (below), the schedule arithmetic mask-order backends
share (``resume_step``) and ``regenerate``, the one call PARM++ makes.

- Mask order (Show-o / MaskGIT): kept tokens are committed, the flagged ones set to [MASK], and
  decoding resumes at the last step of the cosine schedule that still has at least that many
  positions unknown. Committed tokens are never re-masked (``generation/maskgit.py``), so the
  flagged tokens are filled conditioned on the prompt and on every kept token, and the kept
  tokens come out unchanged (MaskGIT-style inpainting).
- Raster order (LlamaGen / Janus): the rows before the step (block of rows) holding the first
  flagged token are replayed into the KV cache; that block and everything after it are decoded
  again, since a raster model cannot condition on tokens that come later.

Paper PARM++ conditions a fine-tuned Show-o on the previous image and the critique text as
well; that fine-tune is unreleased (paper section 5 and its released code), so here the
critique only picks the region. Every row of one call resumes at one step, chosen for the row
needing the most work, so callers refine one image per call for an exact per-image schedule.
"""
from __future__ import annotations

import torch

from generation.base import Generator
from generation.maskgit import scheduled_mask_count


def regenerate(generator: Generator, prompts: list[str], tokens: torch.Tensor, flagged: torch.Tensor,
               generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(uint8 images [B, 3, H, W], long tokens [B, N])`` after decoding the ``flagged`` tokens again."""
    canvas = generator.restart(prompts, tokens, flagged, generators)
    while canvas.step_index < generator.num_steps:
        canvas = generator.step(canvas)
    return generator.finish(canvas), generator.final_tokens(canvas)


def resume_step(num_tokens: int, num_steps: int, num_unknown: int) -> int:
    """The last mask-predict step that starts with at least ``num_unknown`` unknown positions.

    Step ``s > 0`` starts with ``floor(N cos(pi/2 * s/T))`` positions masked (the count step
    ``s - 1`` re-masks, ``generation/maskgit.py::mask_length``); step 0 starts with all ``N``.
    """
    def unknown_at(step: int) -> int:
        return num_tokens if step == 0 else scheduled_mask_count(num_tokens, step, num_steps)  # float32, as upstream

    return max(step for step in range(num_steps) if unknown_at(step) >= num_unknown)
