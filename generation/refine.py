"""Self-correction for PARM++: decode some tokens of a finished image again, keep the others.

The step-wise protocol (``generation/base.py``) can only start from nothing. PARM++ (paper
section 5) needs to redo part of a finished image, so this module adds two operations, written
for the tiny backend through its public canvas fields, and defers to a backend's own methods
of the same names when it has them (the protocol extension proposed for ``generation/base.py``):

    generator.restart(prompts, tokens, regenerate, generators) -> Canvas
    generator.final_tokens(canvas) -> long [B, N]

Who implements them: the tiny backend here (both orders); Show-o (``generation/showo.py``, mask
order), LlamaGen (``generation/llamagen.py``) and Janus-Pro (``generation/janus.py``, both raster)
as methods of their own, with the semantics below (tests/test_refine_backends.py,
tests/test_llamagen.py). Every backend of ``generation.GENERATORS`` can therefore self-correct.

- Mask order (Show-o / MaskGIT): kept tokens are committed, the flagged ones set to [MASK], and
  decoding resumes at the last step of the cosine schedule that still has at least that many
  positions unknown. Committed tokens are never re-masked (``generation/maskgit.py``), so the
  flagged tokens are filled conditioned on the prompt and on every kept token, and the kept
  tokens come out unchanged (MaskGIT-style inpainting).
- Raster order (LlamaGen / Janus): the rows before the step (block of rows) holding the first
  flagged token are replayed into the KV cache; that block and everything after it are decoded
  again, since a raster model cannot condition on tokens that come later.

Paper PARM++ conditions a fine-tuned Show-o on the previous image and the critique text as
well; that fine-tune is unreleased (paper.md section 2), so here the critique only picks the
region. Every row of one call resumes at one step, chosen for the row needing the most work,
so callers refine one image per call for an exact per-image schedule.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from generation.base import check_restart_inputs
from generation.maskgit import scheduled_mask_count, step_temperature
from generation.tiny.backend import MaskCanvas, RasterCanvas, TinyGenerator


def final_tokens(generator, canvas) -> torch.Tensor:
    """``long [B, N]`` tokens of a finished canvas (what ``finish`` decodes)."""
    own = getattr(generator, "final_tokens", None)
    if own is not None:
        return own(canvas)
    if isinstance(canvas, MaskCanvas):
        return canvas.sampled  # the last full sample; ``tokens`` keeps one position masked
    if isinstance(canvas, RasterCanvas):
        return canvas.tokens
    raise ValueError(_unsupported(generator, "final_tokens(canvas)"))


def restart(generator, prompts: list[str], tokens: torch.Tensor, regenerate: torch.Tensor,
            generators: list[torch.Generator]):
    """A canvas holding ``tokens`` where ``regenerate`` (``bool [B, N]``) is False, ready to ``step``
    to the end; the flagged positions are decoded again with randomness from ``generators``."""
    own = getattr(generator, "restart", None)
    if own is not None:
        return own(prompts, tokens, regenerate, generators)
    if not isinstance(generator, TinyGenerator):
        raise ValueError(_unsupported(generator, "restart(prompts, tokens, regenerate, generators)"))
    check_restart_inputs(prompts, tokens, regenerate)
    tokens, regenerate = tokens.to(generator.device), regenerate.to(generator.device)
    if generator.cfg.order == "mask":
        return _restart_mask(generator, prompts, tokens, regenerate, generators)
    return _restart_raster(generator, prompts, tokens, regenerate, generators)


def regenerate(generator, prompts: list[str], tokens: torch.Tensor, flagged: torch.Tensor,
               generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(uint8 images [B, 3, H, W], long tokens [B, N])`` after decoding the ``flagged`` tokens again."""
    canvas = restart(generator, prompts, tokens, flagged, generators)
    while canvas.step_index < generator.num_steps:
        canvas = generator.step(canvas)
    return generator.finish(canvas), final_tokens(generator, canvas)


def resume_step(num_tokens: int, num_steps: int, num_unknown: int) -> int:
    """The last mask-predict step that starts with at least ``num_unknown`` unknown positions.

    Step ``s > 0`` starts with ``floor(N cos(pi/2 * s/T))`` positions masked (the count step
    ``s - 1`` re-masks, ``generation/maskgit.py::mask_length``); step 0 starts with all ``N``.
    """
    def unknown_at(step: int) -> int:
        return num_tokens if step == 0 else scheduled_mask_count(num_tokens, step, num_steps)  # float32, as upstream

    return max(step for step in range(num_steps) if unknown_at(step) >= num_unknown)


@torch.inference_mode()
def _restart_mask(generator: TinyGenerator, prompts, tokens, regenerate, generators) -> MaskCanvas:
    canvas = generator.start(prompts, generators)  # no forward in mask order
    masked = torch.where(regenerate, generator.model.cfg.mask_id, tokens)
    step = resume_step(tokens.shape[1], generator.num_steps, int(regenerate.sum(-1).max()))
    cfg, temperature = generator.cfg, generator.cfg.temperature
    for done in range(step):  # the annealed temperature the schedule has reached by ``step``
        temperature = step_temperature(cfg.temperature, temperature, done, generator.num_steps,
                                       cfg.temperature_schedule)
    return replace(canvas, tokens=masked, sampled=masked.clone(), temperature=temperature, step_index=step)


@torch.inference_mode()
def _restart_raster(generator: TinyGenerator, prompts, tokens, regenerate, generators) -> RasterCanvas:
    canvas = generator.start(prompts, generators)  # prefills the prompt (counted by the backend)
    per_step = generator.cfg.rows_per_step * generator.tokenizer.cfg.grid_size
    first_flagged = int(regenerate.int().argmax(-1).min())
    step = first_flagged // per_step
    kept = step * per_step
    logits = canvas.next_logits
    for slot in range(kept):  # feed kept code ``slot`` at image slot ``slot + 1``, as _raster_step does
        logits = generator.model.raster_next(tokens[:, slot].repeat(2), slot + 1, canvas.caches)
        generator.num_forwards += len(prompts)
    fresh = torch.full_like(tokens, -1)
    fresh[:, :kept] = tokens[:, :kept]
    return replace(canvas, tokens=fresh, next_logits=logits, step_index=step)


def _unsupported(generator, method: str) -> str:
    return (f"parm++ self-correction needs generator.{method}; the {type(generator).__name__} backend has none "
            "(the tiny backend gets it from generation/refine.py; Show-o, LlamaGen and Janus-Pro define their own: "
            "add restart/final_tokens to this backend as they do, or use --reward_model parm)")
