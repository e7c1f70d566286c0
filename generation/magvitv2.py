"""MAGVIT-v2 image tokenizer of Show-o (``showlab/magvitv2``): LFQ code table, encoder and decoder.

Plain torch modules whose parameter names follow the module tree of Show-o's
``models/modeling_magvitv2.py`` + ``models/common_modules.py`` (taming-transformers blocks), so the
hub file ``pytorch_model.safetensors`` loads with ``load_state_dict(strict=True)``:
``encoder.{conv_in, down.i.block.j.*, down.i.downsample.conv, mid.*, norm_out, conv_out, quant_conv}``,
``decoder.{post_quant_conv, conv_in, mid.*, up.i.block.j.*, up.i.upsample.conv, norm_out, conv_out}``.

Differences from upstream, all without effect on the numbers:
- Upstream builds per-level attention lists for ``attn_resolutions=[5]``; no level has resolution 5,
  so they are always empty (no parameters) and are left out here. The only attention is ``mid.attn_1``.
- The LFQ table (``quantize.embedding``, ``quantize.power_vals``) is deterministic, so it is a
  non-persistent buffer here. If a checkpoint carries it, ``load_magvitv2`` checks that it equals
  the computed table and drops it.
- Dropout (p=0) and the unused ``temb`` path have no parameters and are left out.
- ``with_encoder=False`` skips the encoder and filters ``encoder.*`` keys out of the checkpoint.
- Widths can be overridden through ``MagvitConfig`` fields in the checkpoint's ``config.json`` (for
  tiny test checkpoints); the official config has none of them, so the defaults are the real sizes.

Images are float ``[-1, 1]`` ``[B, 3, H, W]``; codes are ``long [B, h*w]`` in raster order. Usage:
``vq = load_magvitv2("showlab/magvitv2", "cuda"); images = vq.decode_codes(codes)``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hub import local_snapshot

CHECKPOINT_FILES = ("pytorch_model.safetensors", "pytorch_model.bin")
"""Weight files of a diffusers ``ModelMixin`` folder, in order of preference (upstream modeling_utils.py)."""


@dataclass
class MagvitConfig:
    """Widths of the tokenizer; the defaults are upstream's (modeling_magvitv2.py ``VQGANEncoder``/``VQGANDecoder``)."""

    ch: int = 128
    encoder_ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4)
    encoder_num_res_blocks: tuple[int, ...] = (4, 3, 4, 3, 4)
    decoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    decoder_num_res_blocks: tuple[int, ...] = (4, 4, 3, 4, 3)
    codebook_bits: int = 13
    """LFQ bits per code = latent channels (``z_channels``); the codebook has ``2**bits`` codes."""

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.decoder_ch_mult) - 1)


# -- building blocks (common_modules.py) ----------------------------------------------------------
def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """GN -> swish -> conv3 -> GN -> swish -> conv3, plus a 1x1 ``nin_shortcut`` when widths differ."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return shortcut + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions, 1x1-conv projections (common_modules.py AttnBlock)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)
        q, k, v = (proj(normed).reshape(b, 1, c, h * w).transpose(-1, -2) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v, as upstream's bmm version
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric padding, as taming-transformers


class MidBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """One resolution: ``block.{j}`` ResnetBlocks, then an optional ``upsample``/``downsample``."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, resample: type[nn.Module] | None,
                 resample_name: str):
        super().__init__()
        widths = [in_channels] + [out_channels] * num_blocks
        self.block = nn.ModuleList(ResnetBlock(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.resample_name = resample_name
        if resample is not None:
            self.add_module(resample_name, resample(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        resample = getattr(self, self.resample_name, None)
        return resample(x) if resample is not None else x


# -- encoder / decoder (modeling_magvitv2.py) -----------------------------------------------------
class Encoder(nn.Module):
    """``[B, 3, H, W]`` -> latents ``[B, bits, H/f, W/f]`` (before quantization)."""

    def __init__(self, cfg: MagvitConfig):
        super().__init__()
        mults = cfg.encoder_ch_mult
        self.conv_in = nn.Conv2d(3, cfg.ch, 3, padding=1)
        in_mults = (1,) + tuple(mults)
        self.down = nn.ModuleList(
            Level(cfg.ch * in_mults[i], cfg.ch * mults[i], cfg.encoder_num_res_blocks[i],
                  Downsample if i != len(mults) - 1 else None, "downsample")
            for i in range(len(mults)))
        top = cfg.ch * mults[-1]
        self.mid = MidBlock(top)
        self.norm_out = group_norm(top)
        self.conv_out = nn.Conv2d(top, cfg.codebook_bits, 3, padding=1)
        self.quant_conv = nn.Conv2d(cfg.codebook_bits, cfg.codebook_bits, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.quant_conv(self.conv_out(F.silu(self.norm_out(h))))


class Decoder(nn.Module):
    """Quantized latents ``[B, bits, h, w]`` -> images ``[B, 3, h*f, w*f]`` in about ``[-1, 1]``."""

    def __init__(self, cfg: MagvitConfig):
        super().__init__()
        mults = cfg.decoder_ch_mult
        top = cfg.ch * mults[-1]
        self.conv_in = nn.Conv2d(cfg.codebook_bits, top, 3, padding=1)
        self.mid = MidBlock(top)
        # up[i] is level i; they run from the coarsest (last) to the finest (0), and level i takes
        # the width of level i+1 (upstream builds them in reverse and prepends).
        in_widths = [cfg.ch * m for m in mults[1:]] + [top]
        self.up = nn.ModuleList(
            Level(in_widths[i], cfg.ch * mults[i], cfg.decoder_num_res_blocks[i],
                  Upsample if i != 0 else None, "upsample")
            for i in range(len(mults)))
        self.norm_out = group_norm(cfg.ch * mults[0])
        self.conv_out = nn.Conv2d(cfg.ch * mults[0], 3, 3, padding=1)
        self.post_quant_conv = nn.Conv2d(cfg.codebook_bits, cfg.codebook_bits, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(self.post_quant_conv(z)))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class LookupFreeQuantizer(nn.Module):
    """LFQ (modeling_magvitv2.py ``LFQuantizer``): code ``i`` <-> the sign vector of its bits, MSB first."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits
        shifts = torch.arange(bits - 1, -1, -1)
        table = (torch.arange(2 ** bits)[:, None] >> shifts) & 1
        self.register_buffer("embedding", table.float() * 2 - 1, persistent=False)  # [2**bits, bits] of +-1
        self.register_buffer("power_vals", 2 ** shifts, persistent=False)

    def codes_to_latents(self, codes: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """``long [B, h*w]`` -> ``[B, bits, h, w]``."""
        h, w = shape
        return self.embedding[codes].view(codes.shape[0], h, w, self.bits).permute(0, 3, 1, 2).contiguous()

    def latents_to_codes(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, bits, h, w]`` -> ``long [B, h*w]``: bit k set where channel k is positive."""
        bits = (z > 0).long()
        return (bits * self.power_vals.view(1, -1, 1, 1)).sum(1).flatten(1)


class MagvitV2(nn.Module):
    def __init__(self, cfg: MagvitConfig | None = None, with_encoder: bool = True):
        super().__init__()
        self.cfg = cfg or MagvitConfig()
        if with_encoder:
            self.encoder = Encoder(self.cfg)
        self.decoder = Decoder(self.cfg)
        self.quantize = LookupFreeQuantizer(self.cfg.codebook_bits)

    @property
    def codebook_size(self) -> int:
        return 2 ** self.cfg.codebook_bits

    def decode_codes(self, codes: torch.Tensor, shape: tuple[int, int] | None = None) -> torch.Tensor:
        """Images float ``[B, 3, H, W]`` in about ``[-1, 1]`` from codes ``long [B, N]``.

        ``shape=(h, w)`` gives the token grid; without it the grid is square (upstream ``decode_code``).
        """
        if shape is None:
            side = math.isqrt(codes.shape[1])
            if side * side != codes.shape[1]:
                raise ValueError(f"{codes.shape[1]} codes are not a square grid; pass shape=(h, w)")
            shape = (side, side)
        z = self.quantize.codes_to_latents(codes, shape).to(self.decoder.conv_in.weight.dtype)
        return self.decoder(z).float()

    def encode_codes(self, images: torch.Tensor) -> torch.Tensor:
        """Codes ``long [B, h*w]`` of float images ``[B, 3, H, W]`` in ``[-1, 1]`` (upstream ``get_code``)."""
        if not hasattr(self, "encoder"):
            raise ValueError("this MAGVIT-v2 was loaded with with_encoder=False; load it with the encoder to encode")
        z = self.encoder(images.to(self.encoder.conv_in.weight.dtype))
        return self.quantize.latents_to_codes(z)


# -- loading ---------------------------------------------------------------------------------------
def resolve_checkpoint(name: str, what: str, how_to_get: str) -> Path:
    """A local folder, or the snapshot of Hugging Face repo ``name`` in the local cache (never downloads)."""
    return Path(local_snapshot(name, lambda invalid, cache: ValueError(
        f"{what} {name!r} is neither a local folder nor in the Hugging Face cache "
        f"({'not a valid repo id' if invalid else 'not in ' + cache}). {how_to_get}")))


def read_state_dict(folder: Path, what: str) -> dict[str, torch.Tensor]:
    """The weights of a diffusers-style folder (``pytorch_model.safetensors`` or ``pytorch_model.bin``)."""
    for filename in CHECKPOINT_FILES:
        path = folder / filename
        if path.is_file():
            if filename.endswith(".safetensors"):
                from safetensors.torch import load_file
                return load_file(str(path))
            return torch.load(path, map_location="cpu", weights_only=True)
    raise ValueError(f"{what} folder {folder} has none of {CHECKPOINT_FILES}")


def read_magvit_config(folder: Path) -> MagvitConfig:
    """Width overrides from ``config.json`` (keys named as ``MagvitConfig`` fields); none -> real sizes."""
    path = folder / "config.json"
    raw = json.loads(path.read_text()) if path.is_file() else {}
    known = {f.name for f in fields(MagvitConfig)}
    unknown = sorted(k for k in raw if not k.startswith("_") and k not in known)
    if unknown:
        raise ValueError(f"{path}: unknown MAGVIT-v2 config keys {unknown}; valid: {sorted(known)}")
    return MagvitConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in known})


def load_magvitv2(name: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                  with_encoder: bool = True) -> MagvitV2:
    """MAGVIT-v2 from a local folder or the HF cache, loaded strictly, in eval mode."""
    folder = resolve_checkpoint(name, "MAGVIT-v2 tokenizer", "Download it with `hf download showlab/magvitv2` "
                                "or point generation.tokenizer at a folder holding its pytorch_model.safetensors.")
    model = MagvitV2(read_magvit_config(folder), with_encoder=with_encoder)
    state = read_state_dict(folder, "MAGVIT-v2")
    for key in ("quantize.embedding", "quantize.power_vals"):
        if key in state:
            expected = getattr(model.quantize, key.split(".")[1])
            if not torch.equal(state.pop(key).to(expected.dtype), expected):
                raise ValueError(f"{folder}: checkpoint {key} differs from the LFQ table (MSB-first sign bits)")
    if not with_encoder:
        state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval()
