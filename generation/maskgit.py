"""Mask-predict decoding (MaskGIT, Chang et al. 2022) as Show-o runs it, shared by backends.

One step (Show-o ``models/modeling_showo.py::t2i_generate`` and ``models/sampling.py``):
sample every position from the guided distribution, keep committed positions, then re-mask
the ``floor(N * cos(pi/2 * (s+1)/T))`` least confident new positions (float32, as upstream:
``scheduled_mask_count``; at least 1, at most all but one still unknown), where confidence is ``log p + temperature * Gumbel``. The final image
is the full sample of the last step, so every position is filled.

Randomness: each row draws from its own ``torch.Generator`` so a candidate's image depends
only on its seed, not on the batch it ran in.
"""
from __future__ import annotations

import math

import torch

from generation.base import finite_logits

TEMPERATURE_SCHEDULES = ("showo", "maskgit", "upstream")
"""How the re-masking temperature anneals over the steps of one image:
- ``showo``: ``t <- t * (1 - ratio)`` each step, compounding (Show-o's code), restarting at the
  configured temperature for every image. The default: it is what the paper's Show-o runs.
- ``maskgit``: ``t0 * (1 - ratio)``, not compounding (MaskGIT's ``choice_temperature``).
- ``upstream``: Show-o's compounding but never reset between the images of a run, as
  Image-Generation-CoT's loop does (baseline.py/orm.py/parm.py), so after the first image the
  temperature is 0 and re-masking is deterministic. Only for reproducing upstream.
"""


def guided_logits(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Show-o's classifier-free guidance ``(1 + s) * cond - s * uncond``."""
    return (1 + scale) * cond - scale * uncond


def per_row_uniform(shape: tuple[int, ...], generators: list[torch.Generator], device) -> torch.Tensor:
    """``[B, *shape]`` uniform noise, row ``i`` drawn from ``generators[i]`` (CPU generators).

    On an accelerator, drawing ``B x 256 x 8192`` values on the CPU costs more than the Show-o
    forward itself, so each row instead takes one 63-bit seed from its CPU generator and draws on
    the device from a generator seeded with it: still a function of the candidate's seed alone.
    """
    device = torch.device(device)
    if device.type == "cpu":
        out = torch.empty((len(generators), *shape))
        for row, g in zip(out, generators):  # drawn in place: the same values as a stack of draws, no copy
            torch.rand(shape, generator=g, out=row)
        return out
    rows = []
    for g in generators:
        seed = int(torch.randint(0, 2 ** 63 - 1, (), generator=g))
        rows.append(torch.rand(shape, generator=torch.Generator(device).manual_seed(seed), device=device))
    return torch.stack(rows)


def gumbel(uniform: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log u)`` from uniform noise."""
    return -torch.log((-torch.log(uniform.clamp_min(1e-20))).clamp_min(1e-20))


def sample_codes(logits: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """One categorical draw per position (Gumbel-max), ``logits [B, N, K]`` -> ``long [B, N]``."""
    noise = gumbel(per_row_uniform(tuple(logits.shape[1:]), generators, logits.device))
    return (logits.float().log_softmax(-1) + noise).argmax(-1)


def scheduled_mask_count(num_tokens: int, done: int, num_steps: int) -> int:
    """``floor(N * cos(pi/2 * done/T))``, the cosine schedule's masked count after ``done`` of ``T`` steps,
    computed in the dtypes upstream uses, since the float rounding decides the integer.

    Show-o ``models/modeling_showo.py::t2i_generate`` (L157-166): ``ratio = 1.0 * (step + 1) / timesteps``
    (Python float), ``mask_ratio = noise_schedule(torch.tensor(ratio))`` (float32, the default dtype; CPU) with
    ``models/sampling.py::cosine_schedule`` (L39-40) ``torch.cos(t * math.pi * 0.5)``, then
    ``(num_vq_tokens * mask_ratio).floor()`` in float32. At ratio 2/3 float32 gives
    ``cos = 0.49999997`` where float64 ``math.cos`` gives ``0.5000000000000001``: upstream re-masks
    ``floor(256 * 0.49999997) = 127`` at step 11 of 18, not 128. (Image-Generation-CoT's
    ``baseline.py`` L206 copies the same lines.)
    """
    mask_ratio = torch.cos(torch.tensor(done / num_steps, dtype=torch.float32) * math.pi * 0.5)
    return int((num_tokens * mask_ratio).floor())


def mask_length(num_tokens: int, step: int, num_steps: int, unknown: torch.Tensor) -> torch.Tensor:
    """``long [B]`` positions to re-mask after step ``step`` (Show-o's clamp to [1, unknown-1])."""
    target = scheduled_mask_count(num_tokens, step + 1, num_steps)
    remaining = unknown.sum(-1) - 1
    return torch.clamp(torch.minimum(remaining, torch.full_like(remaining, target)), min=1)


def step_temperature(initial: float, current: float, step: int, num_steps: int, schedule: str) -> float:
    """Re-masking temperature used at ``step``; ``current`` is the previous step's value."""
    ratio = (step + 1) / num_steps
    if schedule == "maskgit":
        return initial * (1 - ratio)
    if schedule in ("showo", "upstream"):
        return current * (1 - ratio)
    raise ValueError(f"unknown temperature_schedule {schedule!r}; valid: {TEMPERATURE_SCHEDULES}")


def maskgit_step(logits: torch.Tensor, tokens: torch.Tensor, mask_id: int, step: int, num_steps: int,
                 temperature: float, generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """One mask-predict step: ``(next tokens with [MASK]s, full sample)``, both ``long [B, N]``.

    ``logits [B, N, K]`` are already guided; ``tokens [B, N]`` hold ``mask_id`` where unknown.
    Equivalent to ``masked_step(logits[unknown], ...)``, which backends that compute logits only
    at the unknown positions call directly.
    """
    unknown = tokens == mask_id
    return masked_step(logits[unknown], tokens, mask_id, step, num_steps, temperature, generators)


def masked_step(unknown_logits: torch.Tensor, tokens: torch.Tensor, mask_id: int, step: int, num_steps: int,
                temperature: float, generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """``maskgit_step`` from the guided logits ``[U, K]`` of the unknown positions only (row-major).

    Committed positions keep their codes and are never re-masked, so their samples are never
    used: only the ``U`` unknown positions are drawn, softmaxed and ranked. Every row still draws
    its full ``[N, K]`` uniform block from its generator, so each stream advances exactly as when
    every position was sampled and the images stay a function of the seed alone.
    """
    unknown = tokens == mask_id
    rows, cols = unknown.nonzero(as_tuple=True)
    logits = finite_logits(unknown_logits).float()
    uniform = per_row_uniform((tokens.shape[1], logits.shape[-1]), generators, logits.device)
    codes = (logits.log_softmax(-1) + gumbel(uniform[rows, cols])).argmax(-1)
    sampled = tokens.clone()
    sampled[rows, cols] = codes
    chosen = torch.full(tokens.shape, torch.finfo(logits.dtype).max, device=logits.device)  # committed: never re-masked
    chosen[rows, cols] = logits.softmax(-1).gather(-1, codes[:, None]).squeeze(-1)
    num_masked = mask_length(tokens.shape[1], step, num_steps, unknown)
    noise = gumbel(per_row_uniform((tokens.shape[1],), generators, logits.device))
    confidence = torch.log(chosen) + temperature * noise
    cut = confidence.sort(-1).values.gather(-1, num_masked[:, None])
    remask = confidence < cut
    return torch.where(remask, mask_id, sampled), sampled
