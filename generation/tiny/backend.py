"""The embedded shapes-world generator behind the step-wise protocol, in both decoding orders.

``order=mask``: Show-o mask-predict over the 8x8 token grid, ``num_steps`` steps.
``order=raster``: next-token decoding with a KV cache; a protocol step decodes
``rows_per_step`` rows of the grid, so ``num_steps = 8 / rows_per_step``.
Candidates of a prompt and their guidance rows run as one batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from generation.base import check_finished, check_restart_inputs, clone_generators, decided_now, decision_stats, \
    empty_token_stats, finite_logits
from generation.config import GenerationConfig
from generation.maskgit import guided_logits, masked_step, per_row_uniform, gumbel, step_temperature
from generation.refine import resume_step
from generation.tiny.model import TinyT2I
from shapes.word_tokenizer import WordTokenizer
from shapes.patch_tokenizer import PatchTokenizer

BLANK_CODE = 0
"""The tokenizer orders codes by frequency, so code 0 is the empty background cell."""


@dataclass
class MaskCanvas:
    text: torch.Tensor  # long [B, T]
    tokens: torch.Tensor  # long [B, N], mask_id where unknown
    sampled: torch.Tensor  # long [B, N], last full prediction
    generators: list[torch.Generator]
    temperature: float
    token_stats: torch.Tensor  # float [B, 4], generation.base.Canvas.token_stats
    step_index: int = 0
    prefix: list[dict] | None = field(default=None, repr=False)
    """Per layer, the K/V of the prompt prefix ``[2B, H, P, hd]`` (conditional rows, then guidance
    rows), cached by the first step; ``None`` until then (``TinyT2I.mask_hidden``)."""

    def select(self, index: torch.Tensor) -> "MaskCanvas":
        prefix = None
        if self.prefix is not None:
            both = torch.cat([index, index + len(self.text)])  # guidance rows follow their candidate
            prefix = [{"k": c["k"][both], "v": c["v"][both]} for c in self.prefix]
        return replace(self, text=self.text[index], tokens=self.tokens[index], sampled=self.sampled[index],
                       generators=clone_generators(self.generators, index.tolist()),
                       token_stats=self.token_stats[index], prefix=prefix)


@dataclass
class RasterCanvas:
    text: torch.Tensor  # long [B, T]
    tokens: torch.Tensor  # long [B, N], -1 where not yet decoded
    next_logits: torch.Tensor  # float [2B, K]: rows [0, B) conditional, [B, 2B) unconditional
    caches: list[dict] = field(repr=False)
    generators: list[torch.Generator] = field(repr=False)
    token_stats: torch.Tensor = field(repr=False)  # float [B, 4], generation.base.Canvas.token_stats
    step_index: int = 0

    def select(self, index: torch.Tensor) -> "RasterCanvas":
        both = torch.cat([index, index + len(self.text)])  # guidance rows follow their candidate
        caches = [{**c, "k": c["k"][both], "v": c["v"][both]} for c in self.caches]
        return replace(self, text=self.text[index], tokens=self.tokens[index], next_logits=self.next_logits[both],
                       caches=caches, generators=clone_generators(self.generators, index.tolist()),
                       token_stats=self.token_stats[index])


class TinyGenerator:
    def __init__(self, cfg: GenerationConfig, device: torch.device | str = "cpu"):
        weights = Path(cfg.weights)
        if not (weights / "generator" / "config.json").is_file():
            raise ValueError(f"no shapes-world generator at {weights}/generator; train it with "
                             "`bash scripts/train_shapes.sh` or point generation.weights at a trained folder")
        if cfg.order not in ("mask", "raster"):
            raise ValueError(f"generation.order must be 'mask' or 'raster', got {cfg.order!r}")
        self.cfg = cfg
        self.device = torch.device(device)
        self.model = TinyT2I.load(weights / "generator").to(self.device)
        self.tokenizer = PatchTokenizer.load(weights / "tokenizer").to(self.device)
        self.text_tokenizer = WordTokenizer.load(weights / "generator" / "text_vocab.json")
        grid = self.tokenizer.cfg.grid_size
        if cfg.order == "raster" and grid % cfg.rows_per_step:
            raise ValueError(f"generation.rows_per_step={cfg.rows_per_step} must divide the {grid}-row grid")
        self.num_steps = cfg.num_steps if cfg.order == "mask" else grid // cfg.rows_per_step
        self.image_size = self.tokenizer.cfg.image_size
        self.num_forwards = 0
        """Candidate-rows times model forwards (guidance rows not counted twice)."""

    # -- protocol -----------------------------------------------------------------------------
    @torch.inference_mode()
    def start(self, prompts: list[str], generators: list[torch.Generator]):
        text = self.text_tokenizer.encode(prompts).to(self.device)
        if self.cfg.order == "mask":
            masked = torch.full((len(prompts), self.model.cfg.num_image_tokens), self.model.cfg.mask_id,
                                device=self.device)
            return MaskCanvas(text, masked, masked.clone(), list(generators), self.cfg.temperature,
                              empty_token_stats(len(prompts), self.device))
        logits, caches = self.model.raster_prefill(self._with_uncond(text))
        self.num_forwards += len(prompts)
        tokens = torch.full((len(prompts), self.model.cfg.num_image_tokens), -1, device=self.device)
        return RasterCanvas(text, tokens, logits, caches, list(generators),
                            empty_token_stats(len(prompts), self.device))

    @torch.inference_mode()
    def step(self, canvas):
        if canvas.step_index >= self.num_steps:
            raise ValueError(f"canvas already ran all {self.num_steps} steps")
        return self._mask_step(canvas) if self.cfg.order == "mask" else self._raster_step(canvas)

    @torch.inference_mode()
    def preview(self, canvas) -> torch.Tensor:
        return self.decode(self.preview_codes(canvas))

    def preview_codes(self, canvas) -> torch.Tensor:
        """``long [B, N]`` codes ``preview`` decodes: the current full guess, unknown cells blank."""
        if self.cfg.order == "mask":
            return torch.where(canvas.sampled == self.model.cfg.mask_id, BLANK_CODE, canvas.sampled)
        return torch.where(canvas.tokens < 0, BLANK_CODE, canvas.tokens)

    @torch.inference_mode()
    def lookahead(self, canvas) -> torch.Tensor:
        """Mask order: the preview. Raster: greedy decoding of the remaining codes on a copy (forwards counted)."""
        if self.cfg.order == "mask":
            return self.preview(canvas)
        b, grid = len(canvas.text), self.tokenizer.cfg.grid_size
        copy = canvas.select(torch.arange(b, device=canvas.tokens.device))  # own caches: canvas stays as it is
        tokens, logits = copy.tokens.clone(), copy.next_logits
        for slot in range(canvas.step_index * self.cfg.rows_per_step * grid, tokens.shape[1]):
            code = guided_logits(logits[:b], logits[b:], self.cfg.guidance_scale).argmax(-1)
            tokens[:, slot] = code
            if slot + 1 < tokens.shape[1]:
                logits = self.model.raster_next(code.repeat(2), slot + 1, copy.caches)
                self.num_forwards += b
        return self.decode(tokens)

    @torch.inference_mode()
    def finish(self, canvas) -> torch.Tensor:
        check_finished(canvas, self.num_steps, "finish")
        return self.decode(self.final_tokens(canvas))

    def final_tokens(self, canvas) -> torch.Tensor:
        """``long [B, N]`` codes of a finished canvas: in mask order the last full sample (``tokens``
        keeps one position masked), in raster order the decoded codes."""
        check_finished(canvas, self.num_steps)
        return canvas.sampled if self.cfg.order == "mask" else canvas.tokens

    @torch.inference_mode()
    def restart(self, prompts: list[str], tokens: torch.Tensor, regenerate: torch.Tensor,
                generators: list[torch.Generator]):
        """PARM++ self-correction in either order, with the semantics of ``generation/refine.py``."""
        check_restart_inputs(prompts, tokens, regenerate, self.model.cfg.num_image_tokens)
        tokens, regenerate = tokens.to(self.device), regenerate.to(self.device)
        if self.cfg.order == "mask":
            return self._restart_mask(prompts, tokens, regenerate, generators)
        return self._restart_raster(prompts, tokens, regenerate, generators)

    # -- helpers ------------------------------------------------------------------------------
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.decode_uint8(codes)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.encode(images.to(self.device))

    def _with_uncond(self, text: torch.Tensor) -> torch.Tensor:
        """``[2B, T]``: the prompts, then as many empty (all-pad) prompts for guidance."""
        return torch.cat([text, torch.full_like(text, self.text_tokenizer.pad_id)])

    def _mask_step(self, canvas: MaskCanvas) -> MaskCanvas:
        b = len(canvas.text)
        hidden, prefix = self.model.mask_hidden(self._with_uncond(canvas.text), canvas.tokens.repeat(2, 1),
                                                canvas.prefix)
        self.num_forwards += b
        # Only unknown positions are sampled (maskgit.masked_step), so only they need logits.
        unknown = canvas.tokens == self.model.cfg.mask_id
        logits = self.model.logits_at(hidden[unknown.repeat(2, 1)])
        cond, uncond = logits[:len(logits) // 2], logits[len(logits) // 2:]
        guided = guided_logits(cond, uncond, self.cfg.guidance_scale)
        temperature = step_temperature(self.cfg.temperature, canvas.temperature, canvas.step_index,
                                       self.num_steps, self.cfg.temperature_schedule)
        tokens, sampled = masked_step(guided, canvas.tokens, self.model.cfg.mask_id, canvas.step_index,
                                      self.num_steps, temperature, canvas.generators)
        # Confidence signals of the positions this step committed, summed into their rows.
        decided = decided_now(canvas.tokens, tokens, self.model.cfg.mask_id, canvas.step_index + 1 == self.num_steps)
        per_position = decision_stats(guided, cond, uncond, sampled[unknown], decided[unknown])
        stats = canvas.token_stats.index_add(0, unknown.nonzero(as_tuple=True)[0], per_position)
        return replace(canvas, tokens=tokens, sampled=sampled, temperature=temperature, token_stats=stats,
                       step_index=canvas.step_index + 1, prefix=prefix)

    def _raster_step(self, canvas: RasterCanvas) -> RasterCanvas:
        b, grid = len(canvas.text), self.tokenizer.cfg.grid_size
        tokens, logits, stats = canvas.tokens.clone(), canvas.next_logits, canvas.token_stats
        first = canvas.step_index * self.cfg.rows_per_step * grid
        for slot in range(first, first + self.cfg.rows_per_step * grid):
            guided = guided_logits(logits[:b], logits[b:], self.cfg.guidance_scale)
            code = self._sample_raster(guided, canvas.generators)
            stats = stats + decision_stats(guided, logits[:b], logits[b:], code)
            tokens[:, slot] = code
            if slot + 1 < tokens.shape[1]:
                logits = self.model.raster_next(code.repeat(2), slot + 1, canvas.caches)
                self.num_forwards += b
        return replace(canvas, tokens=tokens, next_logits=logits, token_stats=stats, step_index=canvas.step_index + 1)

    def _restart_mask(self, prompts, tokens, regenerate, generators) -> MaskCanvas:
        canvas = self.start(prompts, generators)  # no forward in mask order
        masked = torch.where(regenerate, self.model.cfg.mask_id, tokens)
        step = resume_step(tokens.shape[1], self.num_steps, int(regenerate.sum(-1).max()))
        temperature = self.cfg.temperature
        for done in range(step):  # the annealed temperature the schedule has reached by ``step``
            temperature = step_temperature(self.cfg.temperature, temperature, done, self.num_steps,
                                           self.cfg.temperature_schedule)
        return replace(canvas, tokens=masked, sampled=masked.clone(), temperature=temperature, step_index=step)

    def _restart_raster(self, prompts, tokens, regenerate, generators) -> RasterCanvas:
        canvas = self.start(prompts, generators)  # prefills the prompt (counted)
        per_step = self.cfg.rows_per_step * self.tokenizer.cfg.grid_size
        step = int(regenerate.int().argmax(-1).min()) // per_step
        kept = step * per_step
        logits = canvas.next_logits
        for slot in range(kept):  # feed kept code ``slot`` at image slot ``slot + 1``, as _raster_step does
            logits = self.model.raster_next(tokens[:, slot].repeat(2), slot + 1, canvas.caches)
            self.num_forwards += len(prompts)
        fresh = torch.full_like(tokens, -1)
        fresh[:, :kept] = tokens[:, :kept]
        return replace(canvas, tokens=fresh, next_logits=logits, step_index=step)

    def _sample_raster(self, guided: torch.Tensor, generators) -> torch.Tensor:
        logits = finite_logits(guided).float() / max(self.cfg.temperature, 1e-6)
        if self.cfg.top_k:
            kth = logits.topk(self.cfg.top_k, -1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        noise = gumbel(per_row_uniform((logits.shape[-1],), generators, logits.device))
        return (logits.log_softmax(-1) + noise).argmax(-1)
