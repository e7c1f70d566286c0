"""The step-wise generator protocol that every backend implements.

Search policies (``search.py``) drive any backend through it: they start a batch of
candidates, advance them one decoding step at a time, look at previews, drop or duplicate
candidate rows with ``Canvas.select``, and finish; PARM++ reads a finished canvas's codes and
restarts decoding from some of them (``generation/refine.py`` holds the shared semantics). Every
backend of ``generation.GENERATORS`` implements every member below; nothing is probed with
``getattr``. Images cross this boundary as ``uint8 [B, 3, H, W]`` tensors, never through files.
"""
from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch


class Canvas(Protocol):
    """A batch of partial generations, one row per candidate."""

    step_index: int
    """Decoding steps done so far (0 after ``start``)."""
    tokens: torch.Tensor
    """``long [B, N]`` image tokens as they stand (backends mark unknown positions their own way)."""
    generators: list[torch.Generator]
    """Row ``i``'s random stream; a policy may replace one to make a duplicated row diverge."""
    token_stats: torch.Tensor
    """``float [B, 4]``: over the image tokens decided so far, the sums of each token's normalised
    entropy, top-2 margin and guidance gap (``decision_stats``), then how many were decided. The
    generator's own confidence in a path, read by ``--reward_model confidence`` (scaling_policies.py)."""

    def select(self, index: torch.Tensor) -> "Canvas":
        """The rows ``index`` (``long [B']``), in that order; an index may repeat (duplication)."""
        ...


class Generator(Protocol):
    num_steps: int
    """Decoding steps from ``start`` to a finished image."""
    image_size: int
    num_forwards: int
    """Candidate-rows times model forwards so far (guidance rows not counted twice)."""

    def start(self, prompts: list[str], generators: list[torch.Generator]) -> Canvas:
        """A canvas of ``len(prompts)`` rows; row ``i`` draws all its randomness from ``generators[i]``."""
        ...

    def step(self, canvas: Canvas) -> Canvas:
        """One decoding step of every row."""
        ...

    def preview(self, canvas: Canvas) -> torch.Tensor:
        """``uint8 [B, 3, H, W]`` pictures of the current state (the model's current full guess)."""
        ...

    def finish(self, canvas: Canvas) -> torch.Tensor:
        """``uint8 [B, 3, H, W]`` final images of a canvas that has run ``num_steps`` steps."""
        ...

    def final_tokens(self, canvas: Canvas) -> torch.Tensor:
        """``long [B, N]`` codes of a finished canvas (what ``finish`` decodes); ``ValueError`` on an
        unfinished one (``check_finished``)."""
        ...

    def restart(self, prompts: list[str], tokens: torch.Tensor, regenerate: torch.Tensor,
                generators: list[torch.Generator]) -> Canvas:
        """A canvas holding ``tokens`` (``long [B, N]``) where ``regenerate`` (``bool [B, N]``) is False,
        ready to ``step`` to the end; the flagged codes are decoded again with randomness from
        ``generators``. Mask and raster semantics: ``generation/refine.py``; input checks:
        ``check_restart_inputs``."""
        ...

    def lookahead(self, canvas: Canvas) -> torch.Tensor:
        """``uint8 [B, 3, H, W]``: every row completed cheaply, leaving ``canvas`` and its random streams
        untouched. Mask order: the model's current full guess (``preview``; no forward). Raster order:
        greedy (argmax of the guided logits) decoding of the codes not yet decoded, on a copy of the
        canvas, its forwards counted in ``num_forwards`` (FR-TTS, arXiv 2512.00438: judge a prefix by
        the image it completes to). After the last step it is the final image."""
        ...


@runtime_checkable
class CodedPreviews(Protocol):
    """What a backend offers when its previews are pictures of codes (the shapes generator): the
    codes and the decoder, so a judge that reads codes takes them without re-tokenising pixels
    (``reward_models.verifiers.CodedImages``). ``decode(preview_codes(c))`` equals ``preview(c)``."""

    def preview_codes(self, canvas: Canvas) -> torch.Tensor:
        """``long [B, N]`` codes of every row's preview."""
        ...

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``uint8 [B, 3, H, W]`` pictures of ``codes``."""
        ...


class NonFiniteLogits(RuntimeError):
    """A decoding step met NaN or +inf logits (broken weights, float16 overflow): the run stops
    instead of writing grey images. ``rows`` are the canvas rows hit; ``search.py`` re-raises it
    naming their prompt, image, candidate and step."""

    def __init__(self, rows: list[int], message: str | None = None):
        self.rows = rows
        super().__init__(message or f"NaN or +inf logits in canvas rows {rows}")


def finite_logits(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` unchanged, or ``NonFiniteLogits``; ``-inf`` stays allowed (masked codes)."""
    bad = torch.isnan(logits) | (logits == float("inf"))
    if bad.any():
        raise NonFiniteLogits(bad.flatten(1).any(1).nonzero().flatten().tolist())
    return logits


def clone_generators(generators: list[torch.Generator], rows: list[int]) -> list[torch.Generator]:
    """Copies of ``generators[r]`` for each row ``r``, with the same state.

    ``Canvas.select`` uses it: a kept row continues exactly the stream it had, and a duplicated
    row continues identically to its original unless the caller re-seeds it.
    """
    copies = []
    for row in rows:
        copy = torch.Generator(generators[row].device)
        copy.set_state(generators[row].get_state())
        copies.append(copy)
    return copies


def seeded_generator(seed: int, prompt_index: int, sample_index: int, candidate_index: int) -> torch.Generator:
    """A CPU generator seeded from (seed, prompt, sample, candidate) alone.

    Every random draw of a candidate comes from here, so images do not depend on which rank
    generates them or on what it generated before.
    """
    mixed = torch.tensor([seed, prompt_index, sample_index, candidate_index], dtype=torch.int64)
    # A fixed odd-multiplier hash keeps neighbouring tuples' streams unrelated.
    multipliers = torch.tensor([0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F], dtype=torch.int64)
    return torch.Generator().manual_seed(int((mixed * multipliers).sum().item()) & 0x7FFF_FFFF_FFFF_FFFF)


TOKEN_STATS = ("entropy", "margin", "guidance_gap", "count")
"""Columns of ``Canvas.token_stats``."""


def empty_token_stats(rows: int, device) -> torch.Tensor:
    """``token_stats`` of a canvas that has decided nothing yet."""
    return torch.zeros(rows, len(TOKEN_STATS), device=device)


def decision_stats(guided: torch.Tensor, cond: torch.Tensor | None, uncond: torch.Tensor | None,
                   codes: torch.Tensor, decided: torch.Tensor | None = None) -> torch.Tensor:
    """``float [B, 4]`` sums, over the positions ``decided`` (``bool [B, N]``; None: all), of the
    confidence signals of ScalingAR (arXiv 2509.26376, section 3) for the chosen ``codes``:

    - entropy of ``softmax(guided)`` divided by ``log K`` (0 = certain, 1 = uniform);
    - top-2 margin ``p1 - p2`` of ``softmax(guided)``;
    - guidance gap ``log p_cond(code) - log p_uncond(code)``: how much the prompt, rather than the
      image prior, supports the code (0 without guidance rows, ``cond is None``);
    - 1 per decided position (the count).

    ``guided`` / ``cond`` / ``uncond`` are ``[B, K]`` logits of one position (raster) with ``codes
    [B]``, or ``[B, N, K]`` with ``codes [B, N]`` (mask-predict). ``guided`` is the guided distribution
    before temperature and top-k, i.e. the model's belief rather than the sampler's settings.
    """
    logp = guided.float().log_softmax(-1)
    probs = logp.exp()
    entropy = torch.special.entr(probs).sum(-1) / math.log(guided.shape[-1])
    top2 = probs.topk(2, -1).values
    margin = top2[..., 0] - top2[..., 1]
    if cond is None:
        gap = torch.zeros_like(margin)
    else:
        index = codes[..., None]
        gap = (cond.float().log_softmax(-1).gather(-1, index) - uncond.float().log_softmax(-1).gather(-1, index)
               ).squeeze(-1)
    stats = torch.stack([entropy, margin, gap, torch.ones_like(margin)], -1)
    if decided is not None:
        stats = stats * decided[..., None].to(stats.dtype)
    return stats.sum(1) if stats.ndim == 3 else stats


def decided_now(before: torch.Tensor, after: torch.Tensor, unknown: int, last: bool) -> torch.Tensor:
    """Mask-predict: ``bool [B, N]`` positions unknown before a step and committed by it (on the last
    step every position unknown before, since the final image is the full sample)."""
    was_unknown = before == unknown
    return was_unknown if last else was_unknown & (after != unknown)


PREVIEW_GREY = 128
"""Fill of the rows a raster preview has not decoded yet."""


def raster_preview(decode_rows, tokens: torch.Tensor, rows: int, grid: int, patch: int, image_size: int
                   ) -> torch.Tensor:
    """Preview of raster backends (Janus, LlamaGen): the first ``rows`` token rows of ``tokens``
    (``long [B, N]``, ``grid`` codes per row) decoded by ``decode_rows`` as a strip of ``rows * patch``
    pixel rows on a grey ``uint8 [B, 3, image_size, image_size]`` image."""
    images = torch.full((len(tokens), 3, image_size, image_size), PREVIEW_GREY, dtype=torch.uint8,
                        device=tokens.device)
    if rows:
        images[:, :, : rows * patch] = decode_rows(tokens[:, : rows * grid])
    return images


def run_to_end(generator: Generator, prompts: list[str], generators: list[torch.Generator]) -> torch.Tensor:
    """Plain decoding of every row (the no-verifier baseline)."""
    canvas = generator.start(prompts, generators)
    for _ in range(generator.num_steps):
        canvas = generator.step(canvas)
    return generator.finish(canvas)


def check_restart_inputs(prompts: list[str], tokens: torch.Tensor, regenerate: torch.Tensor,
                         num_tokens: int | None = None) -> None:
    """Input checks of every backend's ``restart`` (PARM++ self-correction, ``generation/refine.py``):
    one row of ``num_tokens`` codes per prompt, a bool mask of the same shape, something flagged per row."""
    expected = (len(prompts), num_tokens if num_tokens is not None else tokens.shape[-1])
    if tokens.ndim != 2 or tuple(tokens.shape) != expected:
        raise ValueError(f"tokens must be long [{expected[0]}, {expected[1]}] (one row of codes per prompt), "
                         f"got {tuple(tokens.shape)}")
    if regenerate.shape != tokens.shape or regenerate.dtype != torch.bool:
        raise ValueError(f"regenerate must be bool {tuple(tokens.shape)}, got {regenerate.dtype} "
                         f"{tuple(regenerate.shape)}")
    if not regenerate.any(-1).all():
        raise ValueError("every row must flag at least one token to regenerate")


def check_finished(canvas, num_steps: int, reader: str = "final_tokens") -> None:
    """``finish`` and ``final_tokens`` read only a canvas that ran every step (an unfinished one has no
    final codes)."""
    if canvas.step_index != num_steps:
        raise ValueError(f"canvas ran {canvas.step_index} of {num_steps} steps; {reader} needs a finished canvas")


class RasterOutputs:
    """``preview``, ``finish`` and ``final_tokens`` of the raster backends (Janus, LlamaGen), whose
    canvases hold ``tokens`` (``long [B, grid * grid]``, -1 where not decoded yet) and advance
    ``cfg.rows_per_step`` token rows a step. The backend provides ``grid``, ``patch``,
    ``image_size``, ``num_steps``, ``decode`` (all codes) and ``decode_rows`` (the first rows)."""

    @torch.inference_mode()
    def preview(self, canvas) -> torch.Tensor:
        """The finished rows decoded as a strip on a grey image, ``uint8 [B, 3, H, W]``."""
        return raster_preview(self.decode_rows, canvas.tokens, canvas.step_index * self.cfg.rows_per_step,
                              self.grid, self.patch, self.image_size)

    @torch.inference_mode()
    def finish(self, canvas) -> torch.Tensor:
        check_finished(canvas, self.num_steps, "finish")
        return self.decode(canvas.tokens)

    def final_tokens(self, canvas) -> torch.Tensor:
        """``long [B, N]`` codes of a finished canvas (what ``finish`` decodes)."""
        check_finished(canvas, self.num_steps)
        return canvas.tokens
