"""A small text-to-image transformer that decodes in either of the paper's two orders.

Sequence: ``[task] + text (padded) + image tokens``. The task token says which order the image
part follows, as Show-o's ``<|t2i|>`` task token does:
- ``mask``: Show-o / MaskGIT mask-predict. Image tokens are the codes with some set to
  ``[MASK]``; image rows attend to everything; the loss is on masked positions.
- ``raster``: LlamaGen / Janus next-token order. Image slot ``i`` holds code ``i-1``
  (``[BOI]`` at slot 0) and predicts code ``i``; image rows attend causally.
In both, the prefix (task + text) attends only to itself, so its keys and values never depend
on the image and the raster decoder can cache them (and every earlier image slot).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

TASKS = {"mask": 0, "raster": 1}


@dataclass
class TinyConfig:
    text_vocab_size: int = 32
    max_text_len: int = 12
    codebook_size: int = 1291
    num_image_tokens: int = 64
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 8
    mlp_ratio: int = 4

    @property
    def mask_id(self) -> int:
        return self.codebook_size

    @property
    def boi_id(self) -> int:
        return self.codebook_size + 1

    @property
    def prefix_len(self) -> int:
        return 1 + self.max_text_len


class Block(nn.Module):
    def __init__(self, cfg: TinyConfig):
        super().__init__()
        d = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.mlp_ratio * d), nn.GELU(), nn.Linear(cfg.mlp_ratio * d, d))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        """``x [B, L, D]``; ``allowed [L, S]`` bool (S = cached + L); ``cache`` holds k/v to extend."""
        b, length, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.num_heads, d // self.num_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, L, hd]
        if cache is not None:
            if "length" in cache:  # preallocated (``TinyT2I.preallocate``): write in place, read the filled part
                start, end = cache["length"], cache["length"] + length
                cache["k"][:, :, start:end], cache["v"][:, :, start:end] = k, v
                cache["length"] = end
                k, v = cache["k"][:, :, :end], cache["v"][:, :, :end]
            else:
                if "k" in cache:
                    k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
                cache["k"], cache["v"] = k, v
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, length, d))
        return x + self.mlp(self.norm2(x))


def attention_pattern(cfg: TinyConfig, task: str) -> torch.Tensor:
    """``bool [L, L]``: which position each position may attend to, for a full sequence."""
    p, n = cfg.prefix_len, cfg.num_image_tokens
    allowed = torch.zeros(p + n, p + n, dtype=torch.bool)
    allowed[:p, :p] = True
    allowed[p:, :p] = True
    allowed[p:, p:] = True if task == "mask" else torch.ones(n, n, dtype=torch.bool).tril()
    return allowed


class TinyT2I(nn.Module):
    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.task_embed = nn.Embedding(len(TASKS), d)
        self.text_embed = nn.Embedding(cfg.text_vocab_size, d)
        self.image_embed = nn.Embedding(cfg.codebook_size + 2, d)  # codes, [MASK], [BOI]
        self.pos_embed = nn.Parameter(torch.zeros(cfg.prefix_len + cfg.num_image_tokens, d))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.codebook_size)
        nn.init.normal_(self.pos_embed, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def embed_prefix(self, text_ids: torch.Tensor, task: str) -> torch.Tensor:
        """``[B, P, D]`` embeddings of the task token and the text, with positions."""
        task_ids = torch.full((len(text_ids), 1), TASKS[task], dtype=torch.long, device=text_ids.device)
        x = torch.cat([self.task_embed(task_ids), self.text_embed(text_ids)], 1)
        return x + self.pos_embed[:self.cfg.prefix_len]

    def embed_image(self, image_ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """``[B, n, D]`` embeddings of image slots ``start .. start+n``."""
        p = self.cfg.prefix_len
        return self.image_embed(image_ids) + self.pos_embed[p + start:p + start + image_ids.shape[1]]

    def run(self, x: torch.Tensor, allowed: torch.Tensor, caches: list[dict] | None = None) -> torch.Tensor:
        for index, block in enumerate(self.blocks):
            x = block(x, allowed, None if caches is None else caches[index])
        return self.head(self.norm(x))

    def forward(self, text_ids: torch.Tensor, image_ids: torch.Tensor, task: str) -> torch.Tensor:
        """Logits ``[B, N, K]`` over codes at every image slot, for a full sequence."""
        x = torch.cat([self.embed_prefix(text_ids, task), self.embed_image(image_ids)], 1)
        allowed = attention_pattern(self.cfg, task).to(x.device)
        return self.run(x, allowed)[:, self.cfg.prefix_len:]

    def mask_hidden(self, text_ids: torch.Tensor, image_ids: torch.Tensor, prefix: list[dict] | None
                    ) -> tuple[torch.Tensor, list[dict]]:
        """Final hidden states ``[B, N, D]`` of the image slots in mask order, and the prefix's K/V.

        The prefix attends only to itself, so its keys and values are the same at every
        mask-predict step: ``prefix=None`` runs the full sequence (exactly ``forward``'s
        arithmetic) and returns them; given, only the image slots run, attending to the cached
        prefix. Both give ``forward``'s numbers: the prefix is computed over the full-length
        masked sequence once, as every step would compute it.
        """
        p = self.cfg.prefix_len
        if prefix is None:
            x = torch.cat([self.embed_prefix(text_ids, "mask"), self.embed_image(image_ids)], 1)
            caches = [{} for _ in self.blocks]
            for block, cache in zip(self.blocks, caches):
                x = block(x, attention_pattern(self.cfg, "mask").to(x.device), cache)
            prefix = [{"k": c["k"][:, :, :p], "v": c["v"][:, :, :p]} for c in caches]
            return x[:, p:], prefix
        x = self.embed_image(image_ids)
        allowed = torch.ones(x.shape[1], p + x.shape[1], dtype=torch.bool, device=x.device)
        for block, cache in zip(self.blocks, prefix):
            x = block(x, allowed, dict(cache))  # a copy: the cached prefix is never extended
        return x, prefix

    def logits_at(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over codes of hidden states ``[..., D]`` (the head of ``run``)."""
        return self.head(self.norm(hidden))

    def raster_prefill(self, text_ids: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        """Logits ``[B, K]`` for code 0 and the KV caches after the prefix and ``[BOI]``."""
        boi = torch.full((len(text_ids), 1), self.cfg.boi_id, dtype=torch.long, device=text_ids.device)
        x = torch.cat([self.embed_prefix(text_ids, "raster"), self.embed_image(boi)], 1)
        allowed = attention_pattern(self.cfg, "raster")[:x.shape[1], :x.shape[1]].to(x.device)
        caches = [{} for _ in self.blocks]
        logits = self.run(x, allowed, caches)[:, -1]
        return logits, [self.preallocate(cache) for cache in caches]

    def preallocate(self, cache: dict) -> dict:
        """``cache`` copied into K/V buffers of the full sequence length, so each decoded token writes
        its K/V in place instead of concatenating the whole cache again (quadratic copying)."""
        b, h, filled, hd = cache["k"].shape
        size = self.cfg.prefix_len + self.cfg.num_image_tokens
        k, v = (cache[key].new_empty(b, h, size, hd) for key in ("k", "v"))
        k[:, :, :filled], v[:, :, :filled] = cache["k"], cache["v"]
        return {"k": k, "v": v, "length": filled}

    def raster_next(self, codes: torch.Tensor, slot: int, caches: list[dict]) -> torch.Tensor:
        """Feed code ``slot-1`` (``codes [B]``) at image slot ``slot``; logits ``[B, K]`` for code ``slot``."""
        x = self.embed_image(codes[:, None], start=slot)
        allowed = torch.ones(1, _cached_length(caches[0]) + 1, dtype=torch.bool, device=x.device)
        return self.run(x, allowed, caches)[:, -1]

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / "model.safetensors")
        (directory / "config.json").write_text(json.dumps(asdict(self.cfg), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> "TinyT2I":
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise ValueError(f"no generator weights at {directory}; train them with "
                             "`python -m training.train_generator`")
        model = cls(TinyConfig(**json.loads((directory / "config.json").read_text())))
        model.load_state_dict(load_file(directory / "model.safetensors"))
        return model.eval()


def _cached_length(cache: dict) -> int:
    return cache["length"] if "length" in cache else cache["k"].shape[2]
