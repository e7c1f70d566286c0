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

from generation.base import clone_generators
from generation.config import GenerationConfig
from generation.maskgit import guided_logits, masked_step, per_row_uniform, gumbel, step_temperature
from generation.tiny.model import TinyT2I
from generation.tiny.text import WordTokenizer
from generation.tiny.vq import PatchTokenizer

BLANK_CODE = 0
"""The tokenizer orders codes by frequency, so code 0 is the empty background cell."""


@dataclass
class MaskCanvas:
    text: torch.Tensor  # long [B, T]
    tokens: torch.Tensor  # long [B, N], mask_id where unknown
    sampled: torch.Tensor  # long [B, N], last full prediction
    generators: list[torch.Generator]
    temperature: float
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
                       generators=clone_generators(self.generators, index.tolist()), prefix=prefix)


@dataclass
class RasterCanvas:
    text: torch.Tensor  # long [B, T]
    tokens: torch.Tensor  # long [B, N], -1 where not yet decoded
    next_logits: torch.Tensor  # float [2B, K]: rows [0, B) conditional, [B, 2B) unconditional
    caches: list[dict] = field(repr=False)
    generators: list[torch.Generator] = field(repr=False)
    step_index: int = 0

    def select(self, index: torch.Tensor) -> "RasterCanvas":
        both = torch.cat([index, index + len(self.text)])  # guidance rows follow their candidate
        caches = [{**c, "k": c["k"][both], "v": c["v"][both]} for c in self.caches]
        return replace(self, text=self.text[index], tokens=self.tokens[index], next_logits=self.next_logits[both],
                       caches=caches, generators=clone_generators(self.generators, index.tolist()))


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
            return MaskCanvas(text, masked, masked.clone(), list(generators), self.cfg.temperature)
        logits, caches = self.model.raster_prefill(self._with_uncond(text))
        self.num_forwards += len(prompts)
        tokens = torch.full((len(prompts), self.model.cfg.num_image_tokens), -1, device=self.device)
        return RasterCanvas(text, tokens, logits, caches, list(generators))

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
    def finish(self, canvas) -> torch.Tensor:
        if canvas.step_index != self.num_steps:
            raise ValueError(f"canvas ran {canvas.step_index} of {self.num_steps} steps")
        return self.decode(canvas.sampled if self.cfg.order == "mask" else canvas.tokens)

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
        logits = guided_logits(logits[:len(logits) // 2], logits[len(logits) // 2:], self.cfg.guidance_scale)
        temperature = step_temperature(self.cfg.temperature, canvas.temperature, canvas.step_index,
                                       self.num_steps, self.cfg.temperature_schedule)
        tokens, sampled = masked_step(logits, canvas.tokens, self.model.cfg.mask_id, canvas.step_index,
                                      self.num_steps, temperature, canvas.generators)
        return replace(canvas, tokens=tokens, sampled=sampled, temperature=temperature,
                       step_index=canvas.step_index + 1, prefix=prefix)

    def _raster_step(self, canvas: RasterCanvas) -> RasterCanvas:
        b, grid = len(canvas.text), self.tokenizer.cfg.grid_size
        tokens, logits = canvas.tokens.clone(), canvas.next_logits
        first = canvas.step_index * self.cfg.rows_per_step * grid
        for slot in range(first, first + self.cfg.rows_per_step * grid):
            code = self._sample_raster(logits[:b], logits[b:], canvas.generators)
            tokens[:, slot] = code
            if slot + 1 < tokens.shape[1]:
                logits = self.model.raster_next(code.repeat(2), slot + 1, canvas.caches)
                self.num_forwards += b
        return replace(canvas, tokens=tokens, next_logits=logits, step_index=canvas.step_index + 1)

    def _sample_raster(self, cond: torch.Tensor, uncond: torch.Tensor, generators) -> torch.Tensor:
        logits = guided_logits(cond, uncond, self.cfg.guidance_scale).float() / max(self.cfg.temperature, 1e-6)
        if self.cfg.top_k:
            kth = logits.topk(self.cfg.top_k, -1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        noise = gumbel(per_row_uniform((logits.shape[-1],), generators, logits.device))
        return (logits.log_softmax(-1) + noise).argmax(-1)
