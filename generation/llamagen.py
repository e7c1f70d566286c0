"""LlamaGen text-to-image (Sun et al. 2024, FoundationVision/LlamaGen) behind the step-wise protocol.

LlamaGen-T2I is a Llama-style GPT that predicts the 16x16 (256 px) or 32x32 (512 px) grid of VQ-16
codes in raster order, conditioned on 120 FLAN-T5-XL feature vectors. There is no transformers class
for it, so this module rebuilds the GPT from llamagen:autoregressive/models/gpt.py with that file's
parameter names (the released ``t2i_XL_stage1_256.pt`` loads strictly) and runs the sampling loop of
llamagen:autoregressive/models/generate.py itself, so that search policies can stop between rows,
look at partial images and prune or duplicate candidates (``LlamaGenCanvas.select`` picks KV-cache
rows). tests/test_llamagen.py checks it token for token against a plain re-implementation of
sample_t2i.py + generate() on tiny random weights.

- Text: the T5 tokenizer pads each prompt on the right to ``cls_token_num`` (120) tokens (truncating,
  with EOS); ``T5EncoderModel`` gives the features; then sample_t2i.py:92-105's manual left padding
  moves the valid features to the end and zeroes the pad rows, and the flipped mask marks them.
  Captions are lower-cased and whitespace-collapsed, the part of T5Embedder.clean_caption (ftfy +
  BeautifulSoup) that changes GenEval prompts; the rest of that cleaning is not reproduced.
- Model quirks kept on purpose: the 2D RoPE table is all zeros on the 120 text positions (gpt.py
  ``precompute_freqs_cis_2d``), so text queries and keys are zero vectors; padded text positions are
  hidden from every query but themselves (generate(): causal mask times ``emb_masks``, plus the
  diagonal), in the guidance rows too.
- Guidance: rows ``[0, B)`` are the prompts, rows ``[B, 2B)`` the learned ``uncond_embedding`` with
  the same text mask; logits ``uncond + cfg * (cond - uncond)``. The run config's ``guidance_scale``
  is Show-o's ``s`` in ``(1+s)*cond - s*uncond`` (the same line), so ``cfg = 1 + guidance_scale``:
  LlamaGen's default 7.5 is ``guidance_scale: 6.5``. ``guidance_scale: 0`` runs no guidance rows,
  as generate() does for ``cfg_scale <= 1``. ``generation.llamagen.cfg_interval`` switches to
  conditional logits after token ``cfg_interval + 1``, as decode_n_tokens() does.
- Sampling (generate.py ``sample``): logits / temperature, top-k, then top-p (nucleus, keeping the
  first token past the mass), then one categorical draw per candidate by Gumbel-max with noise
  from the candidate's own ``torch.Generator`` (instead of the global ``torch.multinomial``), so a
  candidate's image does not depend on the other rows. ``temperature: 0`` is greedy
  (``sample_logits=False``).
- Steps: a protocol step decodes ``rows_per_step`` rows of the grid. Previews decode the finished
  rows only, as a strip pasted on grey (the VQ decoder takes any latent height, like
  ``VQModel.decode_code(codes, shape)``); once every row is done the preview equals ``finish``.
- PARM++ self-correction: ``restart`` / ``final_tokens`` (protocol members, semantics in
  generation/refine.py) replay the kept rows into the KV cache and decode the rest again.
- Images: ``decode_code`` output mapped as torchvision ``save_image(normalize=True,
  value_range=(-1, 1))`` does (sample_t2i.py): clamp, ``(x+1)/2``, ``*255 + 0.5``, truncate.

Weights are never downloaded. ``generation.weights`` and ``generation.tokenizer`` name ``.pt`` files:
a local path, or ``<folder or HF repo id>/<file>.pt`` resolved in the local Hugging Face cache, e.g.
``peizesun/llamagen_t2i/t2i_XL_stage1_256.pt`` and ``peizesun/llamagen_t2i/vq_ds16_t2i.pt``; or a local
folder holding exactly one checkpoint of the kind (``generation.weights=OUT`` or ``--dpo_model OUT`` for a
``dpo.train`` output, whose GPT is ``OUT/t2i_dpo.pt``). The text encoder
(``generation.llamagen.text_encoder``, default ``google/flan-t5-xl``) is a folder or cached id holding a
transformers T5 checkpoint and its tokenizer. Use:

    torchrun --nproc_per_node=8 main.py --config configs/llamagen.yaml
    python -m pytest -q tests/test_llamagen.py      # tiny random LlamaGen + T5, CPU, seconds
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoTokenizer, T5EncoderModel

from generation.base import RasterOutputs, check_restart_inputs, clone_generators, decision_stats, empty_token_stats, \
    finite_logits
from generation.config import GenerationConfig, LlamaGenOptions
from generation.llamagen_vq import CHECKPOINT_ENTRIES, VQDecoder, load_vq_decoder, read_checkpoint
from generation.maskgit import gumbel, per_row_uniform
from hub import local_snapshot

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HEADS_BY_WIDTH = {768: 12, 1024: 16, 1280: 20, 1536: 24, 2048: 32, 2560: 40, 3200: 32, 4096: 32}
"""Attention heads of gpt.py's ``GPT_models`` (B, L, XL, XXL, 1B, XXXL, 3B, 7B), keyed by width:
the head count is not recoverable from a checkpoint's shapes, the width is."""
CHECKPOINT_KINDS = {"GPT": ("cls_embedding.uncond_embedding", "tok_embeddings.weight"),
                    "VQ": ("quantize.embedding.weight", "decoder.conv_out.weight")}
"""State-dict entries that tell a text-to-image GPT (class-to-image ones lack ``uncond_embedding``) and a VQ
tokenizer apart; ``load_gpt`` and ``load_vq_decoder`` require them."""
HOW_TO_GET_WEIGHTS = (
    "On a machine with internet access run `hf download peizesun/llamagen_t2i t2i_XL_stage1_256.pt "
    "vq_ds16_t2i.pt` and `hf download google/flan-t5-xl` into the Hugging Face cache (HF_HOME moves it), "
    "or download the files into folders and name them directly (generation.weights=DIR/t2i_XL_stage1_256.pt, "
    "generation.tokenizer=DIR/vq_ds16_t2i.pt). Without weights, configs/shapes.yaml runs the embedded "
    "shapes world on CPU.")


# -- GPT (llamagen:autoregressive/models/gpt.py) ----------------------------------------------------
@dataclass(frozen=True)
class GPTConfig:
    dim: int
    n_layer: int
    n_head: int
    n_kv_head: int
    vocab_size: int
    caption_dim: int
    cls_token_num: int
    ffn_dim: int
    grid: int
    """Codes per side of the image grid (gpt.py ``block_size = grid ** 2``)."""
    norm_eps: float = 1e-5
    rope_base: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head


class RMSNorm(nn.Module):
    """gpt.py ``RMSNorm``: normalised in float32, cast back, then scaled."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class MLP(nn.Module):
    """gpt.py ``MLP``: bias-free ``fc1`` -> tanh-GELU -> ``fc2``."""

    def __init__(self, in_features: int, hidden: int, out_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class CaptionEmbedder(nn.Module):
    """gpt.py ``CaptionEmbedder``: T5 features -> model width; ``uncond_embedding`` is the null caption."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cap_proj = MLP(cfg.caption_dim, cfg.dim, cfg.dim)
        # A (persistent) buffer in gpt.py too, so it is in the checkpoint and follows .to(dtype).
        self.register_buffer("uncond_embedding", torch.zeros(cfg.cls_token_num, cfg.caption_dim))

    def forward(self, caption: torch.Tensor) -> torch.Tensor:
        return self.cap_proj(caption)


class FeedForward(nn.Module):
    """SwiGLU: ``w2(silu(w1 x) * w3 x)``."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class KVCache:
    """Keys and values of every layer, ``[R, kv_heads, capacity, head_dim]``, filled up to ``length``.

    Preallocated like gpt-fast's static cache (gpt.py ``KVCache``); ``step`` writes in place.
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], length: int = 0):
        self.keys, self.values, self.length = keys, values, length

    @classmethod
    def empty(cls, cfg: GPTConfig, rows: int, capacity: int, dtype: torch.dtype, device) -> "KVCache":
        shape = (rows, cfg.n_kv_head, capacity, cfg.head_dim)
        new = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(2 * cfg.n_layer)]
        return cls(new[: cfg.n_layer], new[cfg.n_layer:])

    def write(self, layer: int, start: int, keys: torch.Tensor, values: torch.Tensor):
        """Store positions ``start .. start+S`` and return the keys/values of ``0 .. start+S``."""
        end = start + keys.shape[2]
        self.keys[layer][:, :, start:end] = keys
        self.values[layer][:, :, start:end] = values
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def select(self, rows: torch.Tensor) -> "KVCache":
        """A new cache holding ``rows`` (indexing copies, so this cache is untouched)."""
        return KVCache([k[rows] for k in self.keys], [v[rows] for v in self.values], self.length)


def rope_table(grid: int, head_dim: int, base: float, num_text: int) -> torch.Tensor:
    """gpt.py ``precompute_freqs_cis_2d``: ``[num_text + grid**2, head_dim/2, 2]`` (cos, sin), float32.

    Each head splits in two halves; pairs of the first half turn with the code's row, pairs of the
    second with its column, at frequencies ``base ** (-2i / (head_dim/2))``. Text positions get
    zeros (not the identity), so their rotated queries and keys vanish.
    """
    half = head_dim // 2
    freqs = 1.0 / (base ** (torch.arange(0, half, 2)[: half // 2].float() / half))
    angles = torch.outer(torch.arange(grid).float(), freqs)  # [grid, head_dim/4]
    cells = torch.cat([angles[:, None, :].expand(-1, grid, -1), angles[None, :, :].expand(grid, -1, -1)], -1)
    table = torch.stack([torch.cos(cells), torch.sin(cells)], -1).flatten(0, 1)
    return torch.cat([torch.zeros(num_text, half, 2), table])


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs of ``x [B, S, H, D]`` by ``table [S, D/2, 2]`` (gpt.py ``apply_rotary_emb``)."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    cos, sin = table[None, :, None, :, 0], table[None, :, None, :, 1]
    rotated = torch.stack([pairs[..., 0] * cos - pairs[..., 1] * sin, pairs[..., 1] * cos + pairs[..., 0] * sin], -1)
    return rotated.flatten(3).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wqkv = nn.Linear(cfg.dim, (cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, rope: torch.Tensor, mask: torch.Tensor, cache: KVCache | None,
                layer: int, start: int) -> torch.Tensor:
        c, (b, s, _) = self.cfg, x.shape
        kv = c.n_kv_head * c.head_dim
        q, k, v = self.wqkv(x).split([c.dim, kv, kv], -1)
        q = apply_rope(q.view(b, s, c.n_head, c.head_dim), rope).transpose(1, 2)
        k = apply_rope(k.view(b, s, c.n_kv_head, c.head_dim), rope).transpose(1, 2)
        v = v.view(b, s, c.n_kv_head, c.head_dim).transpose(1, 2)
        if cache is not None:
            k, v = cache.write(layer, start, k, v)
        k = k.repeat_interleave(c.n_head // c.n_kv_head, 1)
        v = v.repeat_interleave(c.n_head // c.n_kv_head, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
        return self.wo(out.transpose(1, 2).reshape(b, s, c.dim))


class TransformerBlock(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x, rope, mask, cache, layer, start):
        h = x + self.attention(self.attention_norm(x), rope, mask, cache, layer, start)
        return h + self.feed_forward(self.ffn_norm(h))


class LlamaGenGPT(nn.Module):
    """gpt.py ``Transformer`` with ``model_type='t2i'`` (inference only: no dropout, no drop-path)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.cls_embedding = CaptionEmbedder(cfg)
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        # A plain attribute, as in gpt.py: a buffer would follow .to(bfloat16) and lose precision.
        self.rope = rope_table(cfg.grid, cfg.head_dim, cfg.rope_base, cfg.cls_token_num)

    def forward(self, embeds: torch.Tensor, start: int, mask: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        """Hidden states (before the final norm) of positions ``start .. start+S``.

        ``mask`` is ``bool [R, S, start+S]``; ``cache`` (if any) must hold positions ``0 .. start``.
        """
        rope = self.rope[start: start + embeds.shape[1]].to(embeds.device)
        h = embeds
        for i, layer in enumerate(self.layers):
            h = layer(h, rope, mask, cache, i, start)
        if cache is not None:
            cache.length = start + embeds.shape[1]
        return h

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Code logits in float32 (gpt.py: ``self.output(self.norm(h)).float()``)."""
        return self.output(self.norm(hidden)).float()


def attention_mask(text_mask: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """``bool [R, length - start, length]``: who query ``i`` sees among keys ``0 .. length``.

    generate(): causal, text keys only where ``text_mask`` is set, and always the query itself
    (``causal_mask * emb_masks``, then the diagonal; training uses the same mask, dataset/t2i.py).
    """
    keys = torch.arange(length, device=text_mask.device)
    queries = keys[start:, None]
    image = text_mask.new_ones(len(text_mask), length - text_mask.shape[1])
    visible = torch.cat([text_mask, image], 1)[:, None, :] | (keys == queries)
    return visible & (keys <= queries)


def infer_gpt_config(state: dict[str, torch.Tensor], num_heads: int, grid: int) -> GPTConfig:
    """Sizes from tensor shapes (``GPT_models`` entries differ only in width, depth and heads)."""
    vocab_size, dim = state["tok_embeddings.weight"].shape
    n_layer = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k)))
    n_head = num_heads or HEADS_BY_WIDTH.get(dim, 0)
    if not n_head or dim % n_head:
        raise ValueError(f"cannot tell the attention heads of a width-{dim} LlamaGen GPT (known widths: "
                         f"{sorted(HEADS_BY_WIDTH)}); set generation.llamagen.num_heads")
    head_dim = dim // n_head
    qkv_rows = state["layers.0.attention.wqkv.weight"].shape[0]
    return GPTConfig(dim=dim, n_layer=n_layer, n_head=n_head, n_kv_head=(qkv_rows // head_dim - n_head) // 2,
                     vocab_size=vocab_size, caption_dim=state["cls_embedding.cap_proj.fc1.weight"].shape[1],
                     cls_token_num=state["cls_embedding.uncond_embedding"].shape[0],
                     ffn_dim=state["layers.0.feed_forward.w1.weight"].shape[0], grid=grid)


def load_gpt(path: Path, num_heads: int, grid: int, dtype: torch.dtype, device) -> LlamaGenGPT:
    """A LlamaGen T2I GPT checkpoint, loaded strictly, in ``dtype``, eval mode."""
    state = read_checkpoint(path, "LlamaGen GPT")
    if not set(CHECKPOINT_KINDS["GPT"]) <= state.keys():
        raise ValueError(f"{path} is not a LlamaGen text-to-image GPT checkpoint (no cls_embedding.uncond_embedding "
                         f"/ tok_embeddings); class-to-image checkpoints (c2i_*.pt) are not supported")
    model = LlamaGenGPT(infer_gpt_config(state, num_heads, grid))
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval()


# -- files -----------------------------------------------------------------------------------------
def resolve_file(spec: str, setting: str, kind: str) -> Path:
    """A ``.pt`` file: ``spec`` itself; the one checkpoint of ``kind`` (a key of ``CHECKPOINT_KINDS``) in the
    local folder ``spec`` (e.g. a ``dpo.train`` output, whose GPT is ``t2i_dpo.pt``); or ``<folder or HF
    id>/<file>`` found locally (never downloaded)."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.is_dir():
        return checkpoint_in_folder(path, setting, kind)
    if path.suffix != ".pt" or len(path.parts) < 2:
        raise ValueError(f"{setting}={spec!r} must name a LlamaGen .pt file (a path, or <folder or HF repo id>/"
                         f"<file>.pt) or a local folder holding one. {HOW_TO_GET_WEIGHTS}")
    folder = Path(local_snapshot(str(path.parent), lambda invalid, cache: ValueError(
        f"{setting}={spec!r}: {str(path.parent)!r} is neither a local folder nor a model in the Hugging Face "
        f"cache ({cache}); weights are never downloaded here. {HOW_TO_GET_WEIGHTS}")))
    if not (folder / path.name).is_file():
        raise ValueError(f"{setting}={spec!r}: {folder} has no {path.name}. {HOW_TO_GET_WEIGHTS}")
    return folder / path.name


def checkpoint_in_folder(folder: Path, setting: str, kind: str) -> Path:
    """The single ``*.pt`` file directly in ``folder`` that is a LlamaGen ``kind`` checkpoint."""
    files = sorted(folder.glob("*.pt"))
    found = [f for f in files if set(CHECKPOINT_KINDS[kind]) <= checkpoint_keys(f)]
    if not found:
        raise ValueError(f"{setting}={str(folder)!r}: none of its .pt files ({[f.name for f in files]}) is a LlamaGen "
                         f"{kind} checkpoint; name the folder that holds it, or the file. {HOW_TO_GET_WEIGHTS}")
    if len(found) > 1:
        raise ValueError(f"{setting}={str(folder)!r} is ambiguous: {[f.name for f in found]} are all LlamaGen {kind} "
                         f"checkpoints; name one file, e.g. {setting}={folder / found[0].name}")
    return found[0]


def checkpoint_keys(path: Path) -> set[str]:
    """The state-dict names inside a LlamaGen ``.pt`` file, memory-mapped: tensor data is not read.

    The entries and the allow-listed ``argparse.Namespace`` are those of ``llamagen_vq.read_checkpoint``.
    """
    with torch.serialization.safe_globals([argparse.Namespace]):
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    entry = next((e for e in CHECKPOINT_ENTRIES if isinstance(raw, dict) and e in raw), None)
    return set(raw[entry]) if entry is not None and isinstance(raw[entry], dict) else set()


def text_encoder_folder(name_or_path: str) -> str:
    return local_snapshot(name_or_path, lambda invalid, cache: ValueError(
        f"generation.llamagen.text_encoder={name_or_path!r} is neither a local folder nor a model in the Hugging Face "
        f"cache ({cache}); weights are never downloaded here. {HOW_TO_GET_WEIGHTS}"))


def normalize_caption(text: str) -> str:
    """Lower-case, collapse whitespace (the effect of T5Embedder.clean_caption on plain prompts)."""
    return " ".join(text.lower().split())


def left_pad(features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sample_t2i.py:92-105: right-padded ``[B, T, C]`` features -> valid rows last, pad rows zeroed.

    Row ``b`` becomes ``cat(features[b, n:], features[b, :n])`` with ``n`` valid tokens, the mask
    is flipped, and features are multiplied by it.
    """
    length = features.shape[1]
    valid = mask.sum(-1, keepdim=True)
    assert torch.equal(mask, (torch.arange(length, device=mask.device) < valid).to(mask.dtype)), "T5 pads right"
    index = (torch.arange(length, device=mask.device) + valid) % length
    shifted = features.gather(1, index[..., None].expand(-1, -1, features.shape[-1]))
    flipped = mask.flip(-1)
    return shifted * flipped[..., None].to(shifted.dtype), flipped.bool()


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Decoder output -> uint8 as torchvision ``save_image(normalize=True, value_range=(-1, 1))``."""
    unit = (pixels.float().clamp(-1, 1) + 1) / 2
    return (unit * 255 + 0.5).clamp(0, 255).to(torch.uint8)


def top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """generate.py ``top_k_top_p_filtering`` (min_tokens_to_keep=1), without modifying ``logits``."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), -1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = logits.sort(-1, descending=True)
        past = ordered.softmax(-1).cumsum(-1) > top_p
        past[..., 1:] = past[..., :-1].clone()  # keep the first token that crosses top_p
        past[..., 0] = False
        logits = logits.masked_fill(past.scatter(-1, order, past), float("-inf"))
    return logits


# -- generator -------------------------------------------------------------------------------------
@dataclass
class LlamaGenCanvas:
    text_mask: torch.Tensor  # bool [R, T]: R = B (no guidance) or 2B (rows [B, 2B) = null caption)
    tokens: torch.Tensor  # long [B, N], -1 where not decoded yet
    next_logits: torch.Tensor  # float [R, V] for the next slot
    cache: KVCache = field(repr=False)
    generators: list[torch.Generator] = field(repr=False)
    token_stats: torch.Tensor = field(repr=False)  # float [B, 4], generation.base.Canvas.token_stats
    step_index: int = 0

    def select(self, index: torch.Tensor) -> "LlamaGenCanvas":
        """Rows ``index`` of every guidance half, with their own copy of the cache rows.

        ``step`` advances a canvas's cache in place, so continue only from the returned canvas.
        """
        index = index.to(self.tokens.device)
        b, halves = len(self.tokens), len(self.text_mask) // len(self.tokens)
        rows = torch.cat([index + h * b for h in range(halves)])
        return replace(self, text_mask=self.text_mask[rows], tokens=self.tokens[index],
                       next_logits=self.next_logits[rows], cache=self.cache.select(rows),
                       generators=clone_generators(self.generators, index.tolist()),
                       token_stats=self.token_stats[index])


class LlamaGenGenerator(RasterOutputs):
    """LlamaGen-T2I in raster order; see the module docstring for the conventions."""

    def __init__(self, cfg: GenerationConfig, device: torch.device | str = "cpu",
                 options: LlamaGenOptions | None = None):
        options = options or cfg.llamagen
        _check_config(cfg, options)
        self.cfg, self.options, self.device = cfg, options, torch.device(device)
        dtype = DTYPES[cfg.dtype]
        self.vq: VQDecoder = load_vq_decoder(resolve_file(cfg.tokenizer, "generation.tokenizer", "VQ"),
                                               self.device)
        self.patch = self.vq.cfg.downsample
        if options.image_size % self.patch:
            raise ValueError(f"generation.llamagen.image_size={options.image_size} is not a multiple of the VQ's "
                             f"{self.patch}-pixel codes")
        self.grid = options.image_size // self.patch
        self.model = load_gpt(resolve_file(cfg.weights, "generation.weights", "GPT"), options.num_heads,
                              self.grid, dtype, self.device)
        if self.model.cfg.vocab_size != self.vq.cfg.codebook_size:
            raise ValueError(f"the GPT predicts {self.model.cfg.vocab_size} codes but the VQ tokenizer has "
                             f"{self.vq.cfg.codebook_size}; pair t2i_*.pt with vq_ds16_t2i.pt")
        if self.grid % cfg.rows_per_step:
            raise ValueError(f"generation.rows_per_step={cfg.rows_per_step} must divide the {self.grid}-row grid")
        folder = text_encoder_folder(options.text_encoder)
        self.text_tokenizer = AutoTokenizer.from_pretrained(folder)
        self.text_tokenizer.padding_side = "right"  # left_pad() moves T5's right padding, as sample_t2i.py
        self.text_encoder = T5EncoderModel.from_pretrained(folder, dtype=dtype).to(self.device).eval()
        if self.text_encoder.config.d_model != self.model.cfg.caption_dim:
            raise ValueError(f"the T5 in {folder} has width {self.text_encoder.config.d_model} but the GPT expects "
                             f"{self.model.cfg.caption_dim}-wide captions (flan-t5-xl: 2048)")
        self.num_steps = self.grid // cfg.rows_per_step
        self.image_size = options.image_size
        self.cfg_scale = 1 + cfg.guidance_scale
        """LlamaGen's ``cfg_scale`` in ``uncond + cfg * (cond - uncond)`` (7.5 for ``guidance_scale: 6.5``)."""
        self.halves = 2 if self.cfg_scale > 1.0 else 1
        self.num_forwards = 0
        """Candidate-rows times model forwards (guidance rows not counted twice)."""

    @property
    def text_length(self) -> int:
        """Caption tokens (``cls_token_num`` = sample_t2i.py's ``--t5-feature-max-len``, 120)."""
        return self.model.cfg.cls_token_num

    # -- protocol -----------------------------------------------------------------------------
    @torch.inference_mode()
    def start(self, prompts: list[str], generators: list[torch.Generator]) -> LlamaGenCanvas:
        if len(prompts) != len(generators):
            raise ValueError(f"got {len(prompts)} prompts but {len(generators)} generators; give one per row")
        features, text_mask = self.encode_text(prompts)
        if self.halves == 2:
            null = self.model.cls_embedding.uncond_embedding.expand_as(features)
            features, text_mask = torch.cat([features, null]), text_mask.repeat(2, 1)
        cache = KVCache.empty(self.model.cfg, len(features), self.text_length + self.grid ** 2,
                              features.dtype, self.device)
        hidden = self.model(self.model.cls_embedding(features), 0, attention_mask(text_mask, 0, self.text_length),
                            cache)
        self.num_forwards += len(prompts)
        tokens = torch.full((len(prompts), self.grid ** 2), -1, dtype=torch.long, device=self.device)
        return LlamaGenCanvas(text_mask, tokens, self.model.logits(hidden[:, -1]), cache, list(generators),
                              empty_token_stats(len(prompts), self.device))

    @torch.inference_mode()
    def step(self, canvas: LlamaGenCanvas) -> LlamaGenCanvas:
        if canvas.step_index >= self.num_steps:
            raise ValueError(f"canvas already ran all {self.num_steps} steps")
        tokens, logits, stats = canvas.tokens.clone(), canvas.next_logits, canvas.token_stats
        first = canvas.step_index * self.cfg.rows_per_step * self.grid
        for slot in range(first, first + self.cfg.rows_per_step * self.grid):
            code = self.sample(logits, slot, canvas.generators)
            halves = logits.chunk(2) if self.halves == 2 else (None, None)
            stats = stats + decision_stats(self.guided_logits(logits, slot), *halves, code)
            tokens[:, slot] = code
            if slot + 1 == tokens.shape[1]:
                break  # generate() feeds no token after the last one
            logits = self._feed(code, slot, canvas)
        return replace(canvas, tokens=tokens, next_logits=logits, token_stats=stats, step_index=canvas.step_index + 1)

    @torch.inference_mode()
    def lookahead(self, canvas: LlamaGenCanvas) -> torch.Tensor:
        """Greedy (guided argmax) decoding of the codes not decoded yet, on a copy of the canvas; the
        forwards are counted like ``step``'s."""
        copy = canvas.select(torch.arange(len(canvas.tokens)))  # own cache rows: ``_feed`` writes in place
        tokens, logits = copy.tokens.clone(), copy.next_logits
        for slot in range(canvas.step_index * self.cfg.rows_per_step * self.grid, tokens.shape[1]):
            code = self.guided_logits(logits, slot).argmax(-1)
            tokens[:, slot] = code
            if slot + 1 == tokens.shape[1]:
                break
            logits = self._feed(code, slot, copy)
        return self.decode_rows(tokens)

    def _feed(self, code: torch.Tensor, slot: int, canvas: LlamaGenCanvas) -> torch.Tensor:
        """Feed code ``slot`` (``long [B]``) to every guidance half; the ``[R, V]`` logits of the next slot."""
        position = self.text_length + slot  # code `slot` sits at input_pos T + slot (generate())
        embeds = self.model.tok_embeddings(code.repeat(self.halves)[:, None])
        hidden = self.model(embeds, position, attention_mask(canvas.text_mask, position, position + 1), canvas.cache)
        self.num_forwards += len(code)
        return self.model.logits(hidden[:, -1])

    # -- PARM++ self-correction (preview, finish, final_tokens: base.RasterOutputs) ------------
    @torch.inference_mode()
    def restart(self, prompts: list[str], tokens: torch.Tensor, regenerate: torch.Tensor,
                generators: list[torch.Generator]) -> LlamaGenCanvas:
        """A canvas at the step (block of rows) holding the first flagged code of any row, with the kept
        codes before it replayed into the KV cache; ``step`` decodes that block and everything after it
        again (a raster model cannot condition on later codes), as refine.py's raster restart does."""
        check_restart_inputs(prompts, tokens, regenerate, self.grid ** 2)
        canvas = self.start(prompts, generators)
        tokens, per_step = tokens.to(self.device), self.cfg.rows_per_step * self.grid
        step = int(regenerate.int().argmax(-1).min()) // per_step
        logits = canvas.next_logits
        for slot in range(step * per_step):  # feed kept code ``slot`` at input_pos T + slot, as ``step`` does
            position = self.text_length + slot
            embeds = self.model.tok_embeddings(tokens[:, slot].repeat(self.halves)[:, None])
            hidden = self.model(embeds, position, attention_mask(canvas.text_mask, position, position + 1),
                                canvas.cache)
            logits = self.model.logits(hidden[:, -1])
            self.num_forwards += len(prompts)
        kept = torch.full_like(tokens, -1)
        kept[:, : step * per_step] = tokens[:, : step * per_step]
        return replace(canvas, tokens=kept, next_logits=logits, step_index=step)

    # -- decoding, text and scoring -----------------------------------------------------------
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``long [B, grid * grid]`` codes -> ``uint8 [B, 3, H, W]`` (every row)."""
        return self.decode_rows(tokens)

    @torch.inference_mode()
    def decode_rows(self, tokens: torch.Tensor) -> torch.Tensor:
        """The first ``r`` grid rows, ``long [B, r*grid]`` -> ``uint8 [B, 3, r*16, grid*16]``."""
        rows = tokens.shape[1] // self.grid
        return to_uint8(self.vq.decode_codes(tokens.to(self.device), rows, self.grid))

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded T5 features ``[B, T, C]`` (model dtype, pad rows zero) and ``bool [B, T]`` mask.

        ``no_grad`` rather than ``inference_mode``: ``sequence_logprob`` backpropagates through the
        GPT on top of these features (the T5 stays frozen).
        """
        batch = self.text_tokenizer([normalize_caption(p) for p in prompts], max_length=self.text_length,
                                    padding="max_length", truncation=True, add_special_tokens=True,
                                    return_attention_mask=True, return_tensors="pt")
        ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
        features = self.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return left_pad(features.to(self.model.output.weight.dtype), mask)

    def sequence_logprob(self, prompts: list[str], tokens: torch.Tensor,
                         drop_text: torch.Tensor | None = None) -> torch.Tensor:
        """``float [B]``: log p(tokens | prompt), teacher-forced, with gradients.

        One forward over ``[caption embeddings; code embeddings of tokens[:, :-1]]`` with the sampling
        mask; code ``j`` is scored at the position before it, as in sampling (no guidance, temperature 1).
        ``drop_text`` (``bool [B]``, None = all False): rows whose caption is the learned null caption
        ``uncond_embedding`` under the prompt's own text mask, as the sampler's guidance rows are built and
        as training drops captions (gpt.py ``CaptionEmbedder.token_drop``).
        """
        features, text_mask = self.encode_text(prompts)
        if drop_text is not None:
            null = self.model.cls_embedding.uncond_embedding.expand_as(features)
            features = torch.where(drop_text.to(self.device)[:, None, None], null, features)
        tokens = tokens.to(self.device).clone()  # a canvas's tokens are inference tensors; autograd refuses them
        embeds = torch.cat([self.model.cls_embedding(features), self.model.tok_embeddings(tokens[:, :-1])], 1)
        hidden = self.model(embeds, 0, attention_mask(text_mask, 0, embeds.shape[1]), None)
        logits = self.model.logits(hidden[:, self.text_length - 1:])
        return logits.log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1).sum(-1)

    def sample(self, logits: torch.Tensor, slot: int, generators: list[torch.Generator]) -> torch.Tensor:
        """``long [B]`` codes for grid position ``slot`` from the ``[R, V]`` logits of all rows."""
        processed = self.processed_logits(logits, slot)
        if self.cfg.temperature == 0:
            return processed.argmax(-1)
        # Gumbel-max: argmax(log p + Gumbel noise) is one draw from p.
        noise = gumbel(per_row_uniform((processed.shape[-1],), generators, processed.device))
        return (processed.log_softmax(-1) + noise).argmax(-1)

    def processed_logits(self, logits: torch.Tensor, slot: int) -> torch.Tensor:
        """generate.py's ``sample`` input: guidance, then ``/ temperature``, top-k, top-p (greedy: guidance only)."""
        guided = finite_logits(self.guided_logits(logits, slot))
        if self.cfg.temperature == 0:
            return guided
        return top_k_top_p(guided / self.cfg.temperature, self.cfg.top_k, self.options.top_p)

    def guided_logits(self, logits: torch.Tensor, slot: int) -> torch.Tensor:
        """``uncond + (cond - uncond) * cfg`` while guiding, else the conditional rows (decode_one_token)."""
        if self.halves == 1:
            return logits
        cond, uncond = logits.chunk(2)
        if 0 <= self.options.cfg_interval < slot - 1:  # decode_n_tokens: i = slot - 1 > cfg_interval
            return cond
        return uncond + (cond - uncond) * self.cfg_scale


def _check_config(cfg: GenerationConfig, options: LlamaGenOptions) -> None:
    if cfg.order != "raster":
        raise ValueError(f"LlamaGen decodes in raster order only; set generation.order=raster (got {cfg.order!r})")
    if cfg.dtype not in DTYPES:
        raise ValueError(f"generation.dtype={cfg.dtype!r}; valid: {sorted(DTYPES)}")
    if cfg.guidance_scale < 0:
        raise ValueError(f"generation.guidance_scale={cfg.guidance_scale} must be >= 0 (LlamaGen cfg = 1 + it; "
                         f"0 = no guidance)")
    if cfg.temperature < 0:
        raise ValueError(f"generation.temperature={cfg.temperature} must be >= 0 (0 = greedy)")
    if cfg.top_k < 0:
        raise ValueError(f"generation.top_k={cfg.top_k} must be >= 0 (0 = no top-k)")
    if not 0 < options.top_p <= 1:
        raise ValueError(f"generation.llamagen.top_p={options.top_p} must be in (0, 1] (1 = off)")
    if options.cfg_interval < -1:
        raise ValueError(f"generation.llamagen.cfg_interval={options.cfg_interval} must be >= -1 (-1 = always guide)")
    if options.image_size <= 0:
        raise ValueError(f"generation.llamagen.image_size={options.image_size} must be positive")
    if cfg.rows_per_step < 1:
        raise ValueError(f"generation.rows_per_step={cfg.rows_per_step} must be >= 1")
