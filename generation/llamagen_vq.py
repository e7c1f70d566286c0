"""LlamaGen's VQ-16 image tokenizer, decoder side only: codebook lookup, ``post_quant_conv``, decoder.

Written from llamagen:tokenizer/tokenizer_image/vq_model.py (``VQModel.decode_code``, ``Decoder``,
``VectorQuantizer.get_codebook_entry``) with the parameter names of that file, so the released
``vq_ds16_t2i.pt`` (a raw ``torch.save`` dict whose ``"model"`` entry is the ``VQModel`` state dict)
loads strictly. The encoder, ``quant_conv`` and the training-only ``quantize.codebook_used`` buffer
are dropped: generation only decodes. The ResNet/attention/upsample blocks are the taming-transformers
ones that MAGVIT-v2 also uses, with the same parameter names, so they come from generation/magvitv2.py.

Sizes are read off the checkpoint's tensor shapes (codebook, widths, levels, blocks per level), so a
tiny random VQ saved in the same layout loads through the same code (tests/test_llamagen.py).
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from generation.magvitv2 import AttnBlock, ResnetBlock, Upsample, group_norm

CHECKPOINT_ENTRIES = ("model", "module", "state_dict")
"""Where LlamaGen checkpoints keep the weights: DDP, DeepSpeed, Lightning (sample_t2i.py:48-58)."""
UNUSED_PREFIXES = ("encoder.", "quant_conv.", "quantize.codebook_used")
"""VQModel entries that decoding never reads."""


@dataclass(frozen=True)
class VQConfig:
    """``VQ_16`` defaults (vq_model.py ``ModelArgs`` and ``Decoder.__init__``)."""

    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    z_channels: int = 256
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2

    @property
    def downsample(self) -> int:
        """Pixels per code along each side (16 for VQ-16)."""
        return 2 ** (len(self.ch_mult) - 1)


class Decoder(nn.Module):
    """vq_model.py ``Decoder``: ``conv_in``, ``mid`` (res, attn, res), ``conv_blocks`` from the lowest
    resolution up (``num_res_blocks + 1`` ResnetBlocks each, attention only at the lowest level,
    ``upsample`` on all but the last), then GroupNorm, swish, ``conv_out``."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        width = widths[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, width, 3, padding=1)
        self.mid = nn.ModuleList([ResnetBlock(width, width), AttnBlock(width), ResnetBlock(width, width)])
        self.conv_blocks = nn.ModuleList()
        for level in reversed(range(len(widths))):
            block = nn.Module()
            block.res = nn.ModuleList()
            block.attn = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                block.res.append(ResnetBlock(width, widths[level]))
                width = widths[level]
                if level == len(widths) - 1:
                    block.attn.append(AttnBlock(width))
            if level != 0:
                block.upsample = Upsample(width)
            self.conv_blocks.append(block)
        self.norm_out = group_norm(width)
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for module in self.mid:
            h = module(h)
        for block in self.conv_blocks:
            for j, res in enumerate(block.res):
                h = res(h)
                if len(block.attn):
                    h = block.attn[j](h)
            if hasattr(block, "upsample"):
                h = block.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Quantizer(nn.Module):
    """Only the codebook of vq_model.py ``VectorQuantizer`` (``l2_norm=True`` for VQ-16)."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.embedding = nn.Embedding(cfg.codebook_size, cfg.codebook_embed_dim)

    def latents(self, codes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``long [B, h*w]`` -> ``[B, C, h, w]`` L2-normalised code vectors (``get_codebook_entry``)."""
        vectors = F.normalize(self.embedding.weight, p=2, dim=-1)[codes]
        return vectors.reshape(len(codes), height, width, -1).permute(0, 3, 1, 2).contiguous()


class VQDecoder(nn.Module):
    """``VQModel`` without its encoder: ``decode_codes`` is ``VQModel.decode_code``."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.cfg = cfg
        self.quantize = Quantizer(cfg)
        self.post_quant_conv = nn.Conv2d(cfg.codebook_embed_dim, cfg.z_channels, 1)
        self.decoder = Decoder(cfg)

    def decode_codes(self, codes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``long [B, h*w]`` raster-order codes -> pixels ``[B, 3, 16h, 16w]`` in about [-1, 1]."""
        latents = self.quantize.latents(codes, height, width).to(self.post_quant_conv.weight.dtype)
        return self.decoder(self.post_quant_conv(latents))


def read_checkpoint(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The state dict inside a LlamaGen ``.pt`` file (``model``, ``module`` or ``state_dict`` entry).

    Training checkpoints also pickle the run's ``argparse.Namespace`` under ``args``
    (train_t2i.py, vq_train.py); it is allow-listed so the file loads with ``weights_only=True``.
    """
    with torch.serialization.safe_globals([argparse.Namespace]):
        raw = torch.load(path, map_location="cpu", weights_only=True)
    for entry in CHECKPOINT_ENTRIES:
        if isinstance(raw, dict) and entry in raw:
            return raw[entry]
    found = sorted(raw)[:5] if isinstance(raw, dict) else type(raw).__name__
    raise ValueError(f"{what} checkpoint {path} has none of the entries {CHECKPOINT_ENTRIES} (found {found}); "
                     f"expected a LlamaGen .pt file such as vq_ds16_t2i.pt or t2i_XL_stage1_256.pt")


def infer_vq_config(state: dict[str, torch.Tensor]) -> VQConfig:
    """Sizes from tensor shapes; the released VQ-16 gives the ``VQConfig`` defaults."""
    codebook_size, embed_dim = state["quantize.embedding.weight"].shape
    z_channels = state["post_quant_conv.weight"].shape[0]
    ch = state["decoder.conv_out.weight"].shape[1]
    levels = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"decoder\.conv_blocks\.(\d+)\.", k)))
    blocks = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"decoder\.conv_blocks\.0\.res\.(\d+)\.", k)))
    # conv_blocks[i] serves level (levels - 1 - i); its first ResnetBlock's conv1 outputs that level's width.
    mult = [state[f"decoder.conv_blocks.{levels - 1 - lv}.res.0.conv1.weight"].shape[0] // ch for lv in range(levels)]
    return VQConfig(codebook_size=codebook_size, codebook_embed_dim=embed_dim, z_channels=z_channels, ch=ch,
                    ch_mult=tuple(mult), num_res_blocks=blocks - 1)


def load_vq_decoder(path: Path, device: torch.device | str = "cpu") -> VQDecoder:
    """The VQ decoder of a LlamaGen tokenizer checkpoint, loaded strictly, float32, eval mode.

    sample_t2i.py keeps the VQ in float32 whatever ``--precision`` the GPT runs in.
    """
    state = read_checkpoint(path, "VQ tokenizer")
    if "quantize.embedding.weight" not in state or "decoder.conv_out.weight" not in state:
        raise ValueError(f"{path} is not a LlamaGen VQ checkpoint (no quantize.embedding / decoder weights); "
                         f"generation.tokenizer should name vq_ds16_t2i.pt")
    state = {k: v for k, v in state.items() if not k.startswith(UNUSED_PREFIXES)}
    model = VQDecoder(infer_vq_config(state))
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=torch.float32).eval()
