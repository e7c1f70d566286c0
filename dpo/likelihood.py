"""log pi(image | prompt) for DPO, per backend, with gradients.

Mask-predict models (Show-o, the tiny generator in ``order=mask``) have no tractable image
likelihood; DPO uses Show-o's training objective instead (upstream training/train_dpo.py):
mask a fraction ``cos(pi/2 * t)``, ``t ~ U(0, 1)``, of the image tokens (at least one; the
fraction clipped below at ``min_masking_rate``), drop the text with probability
``cond_dropout`` (0.1), and sum log p(true code) over the masked positions.

Difference from upstream (Image-Generation-CoT training/train_dpo.py), on purpose: upstream draws the mask and
the text dropout independently for the chosen and the rejected image, so their log-likelihoods
are taken at different noise levels and about 19% of pairs compare a conditional with an
unconditional score. Here one ``MaskDraw`` per pair serves the chosen image, the rejected image,
the policy and the reference: the margin then compares the two images under identical noise
(a paired, lower-variance estimate). It also lets chosen and rejected share one forward
(``pair_logprobs``). Upstream also adds the ``<|eoi|>`` position to the sum; it is not an image
token, so it is left out here.

Raster models (Janus, LlamaGen, the tiny generator in ``order=raster``) get the exact teacher-forced
sequence log-likelihood; only the text dropout of the draw applies to them.

Every scorer returns ``(logp [B], counts [B])``: the summed log-probability and the number of
tokens it sums over (the SFT term of ``dpo.loss`` normalises by it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from generation.tiny.model import TinyConfig, TinyT2I


@dataclass
class MaskDraw:
    """The noise of one batch of pairs; row ``i`` is used for both images of pair ``i``."""

    masked: torch.Tensor | None
    """``bool [B, N]``: positions replaced by ``[MASK]`` and scored; None for raster models."""
    drop_text: torch.Tensor
    """``bool [B]``: rows whose prompt is replaced by the unconditional (empty) prompt."""

    def repeat(self, times: int) -> "MaskDraw":
        """The same draw for ``times`` stacked copies of the batch (chosen rows, then rejected rows)."""
        return MaskDraw(None if self.masked is None else self.masked.repeat(times, 1), self.drop_text.repeat(times))

    def rows(self, index: slice | torch.Tensor) -> "MaskDraw":
        return MaskDraw(None if self.masked is None else self.masked[index], self.drop_text[index])

    def to(self, device: torch.device | str) -> "MaskDraw":
        return MaskDraw(None if self.masked is None else self.masked.to(device), self.drop_text.to(device))


def mask_ratio(t: torch.Tensor, min_masking_rate: float = 0.0) -> torch.Tensor:
    """Show-o's cosine schedule: the masked fraction ``cos(pi/2 * t)``, at least ``min_masking_rate``."""
    return torch.cos(t * math.pi / 2).clamp(min=min_masking_rate)


def draw_masks(batch: int, num_tokens: int, generator: torch.Generator, cond_dropout: float = 0.1,
               min_masking_rate: float = 0.0) -> MaskDraw:
    """A mask per row: ``round(ratio * N)`` (>= 1) positions chosen uniformly, and a text-dropout flag."""
    ratio = mask_ratio(torch.rand(batch, generator=generator), min_masking_rate)
    num_masked = (ratio * num_tokens).round().clamp(min=1)
    ranks = torch.rand(batch, num_tokens, generator=generator).argsort(1).argsort(1)
    drop = torch.rand(batch, generator=generator) < cond_dropout
    return MaskDraw(ranks < num_masked[:, None], drop)


def draw_text_dropout(batch: int, generator: torch.Generator, cond_dropout: float = 0.1) -> MaskDraw:
    """The draw of a raster model: text dropout only."""
    return MaskDraw(None, torch.rand(batch, generator=generator) < cond_dropout)


def token_logprobs(logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``float [B, N]``: log softmax(logits)[code] at every position (fp32)."""
    return logits.float().log_softmax(-1).gather(-1, codes[..., None]).squeeze(-1)


def masked_token_logprob(logits: torch.Tensor, codes: torch.Tensor,
                         masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum of log p(code) over masked positions [B], number of masked positions [B])``."""
    return (token_logprobs(logits, codes) * masked).sum(-1), masked.sum(-1)


# -- the tiny shapes-world generator ---------------------------------------------------------------
def tiny_masked_logprob(model: TinyT2I, text: torch.Tensor, codes: torch.Tensor, draw: MaskDraw,
                        pad_id: int = 0, cfg: TinyConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked-token log-likelihood of ``codes [B, N]`` given ``text [B, T]`` under the mask-predict order.

    A dropped prompt is all ``[PAD]``, the unconditional row the generator's guidance uses.
    ``cfg``: the model's config when ``model`` is a wrapper (DDP, FSDP) that hides ``.cfg``.
    """
    cfg = cfg or model.cfg
    text = torch.where(draw.drop_text[:, None], pad_id, text)
    inputs = torch.where(draw.masked, cfg.mask_id, codes)
    return masked_token_logprob(model(text, inputs, "mask"), codes, draw.masked)


def tiny_raster_logprob(model: TinyT2I, text: torch.Tensor, codes: torch.Tensor, draw: MaskDraw,
                        pad_id: int = 0, cfg: TinyConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact log p(codes | text) in raster order: slot ``i`` holds code ``i-1`` (``[BOI]`` first)."""
    cfg = cfg or model.cfg
    text = torch.where(draw.drop_text[:, None], pad_id, text)
    boi = torch.full_like(codes[:, :1], cfg.boi_id)
    logits = model(text, torch.cat([boi, codes[:, :-1]], 1), "raster")
    return token_logprobs(logits, codes).sum(-1), torch.full_like(codes[:, 0], codes.shape[1])


TINY_SCORERS: dict[str, Callable] = {"mask": tiny_masked_logprob, "raster": tiny_raster_logprob}
"""``generation.order`` -> the tiny generator's likelihood."""


def pair_logprobs(score: Callable, model, text: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor,
                  draw: MaskDraw, **kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logp_chosen, logp_rejected, counts_chosen, counts_rejected)`` from ONE forward of ``2B`` rows.

    Both halves use the same draw, so the rows differ only in the image tokens.
    """
    logp, counts = score(model, text.repeat(2, 1), torch.cat([chosen, rejected]), draw.repeat(2), **kwargs)
    b = len(chosen)
    return logp[:b], logp[b:], counts[:b], counts[b:]


# -- Show-o (generation/showo.py) ------------------------------------------------------------------
def showo_text_ids(generator, prompts: list[str]) -> torch.Tensor:
    """``long [B, 129]``: Show-o's t2i text part of each prompt (``generation.showo.text_prefix``)."""
    from generation.showo import text_prefix

    rows = [text_prefix(generator.text_tokenizer(p)["input_ids"], generator.ids) for p in prompts]
    return torch.tensor(rows, dtype=torch.long, device=generator.device)


def showo_masked_logprob(generator, text: torch.Tensor, codes: torch.Tensor,
                         draw: MaskDraw) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked-token log-likelihood through Show-o's phi (``ShowoGenerator.image_logits``), with gradients.

    ``text`` is ``showo_text_ids``; a dropped prompt becomes the empty prompt, as Show-o's
    ``cond_dropout_prob`` training does and as its guidance rows are built.
    """
    uncond = generator.uncond_text.expand(len(text), -1)
    text = torch.where(draw.drop_text[:, None].to(text.device), uncond, text)
    masked = draw.masked.to(codes.device)
    inputs = torch.where(masked, generator.mask_code, codes)
    logits = generator.image_logits(generator.input_ids(text, inputs))
    return masked_token_logprob(logits, codes, masked)


# -- Janus-Pro and LlamaGen (generation/janus.py, generation/llamagen.py) --------------------------
def raster_backend_logprob(generator, prompts: list[str], tokens: torch.Tensor,
                           drop_text: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact sequence log-likelihood of a raster backend that has ``sequence_logprob(prompts, tokens,
    drop_text)`` (Janus-Pro: ``generation/janus.py``; LlamaGen: ``generation/llamagen.py``) and the token
    counts. ``drop_text`` (``bool [B]``, None = no dropout): rows scored under the backend's unconditional
    prompt, the one its guidance rows use."""
    logp = generator.sequence_logprob(prompts, tokens, drop_text)
    return logp, torch.full((len(tokens),), tokens.shape[1], device=logp.device)
