"""Janus-Pro (DeepSeek) text-to-image behind the step-wise protocol, on transformers' Janus classes.

The model is ``transformers.JanusForConditionalGeneration`` (``deepseek-community/Janus-Pro-1B`` or
``-7B``): a Llama that predicts the 24x24 grid of VQ codes of a 384x384 image in raster order. This
module runs that raster loop itself instead of calling ``model.generate(generation_mode="image")``,
so that search policies can stop between rows, look at partial images and prune or duplicate
candidates (``JanusCanvas.select`` picks rows of the KV cache). It follows ``generate`` step by step
(tf:models/janus/modeling_janus.py ``JanusForConditionalGeneration.generate``); tests/test_janus.py
checks that both give the same tokens on a tiny random Janus.

- Prompt: ``<|User|>: {prompt}\\n\\n<|Assistant|>:`` + ``<begin_of_image>``, BOS from the tokenizer
  (the converter's chat template plus what ``JanusProcessor(generation_mode="image")`` appends; the
  original Janus builds the same string, janus:generation_inference.py:38-51).
- Guidance: rows ``[0, B)`` are the prompts, rows ``[B, 2B)`` the same ids with every token except
  BOS and BOI replaced by pad (attention mask unchanged), as ``generate`` does. The guided logits
  are ``uncond + s_janus * (cond - uncond)`` (``ClassifierFreeGuidanceLogitsProcessor``). The run
  config's ``guidance_scale`` is Show-o's ``s`` in ``(1+s)*cond - s*uncond``, the same line written
  around the unconditional end, so ``s_janus = 1 + guidance_scale``: Janus-Pro's default 5 is
  ``guidance_scale: 4``.
- Sampling: temperature, then optional top-k (``generate``'s warper order), then one categorical
  draw per candidate by Gumbel-max with noise from the candidate's own ``torch.Generator``, so a
  candidate's image does not depend on the other rows. ``temperature: 0`` means greedy (argmax,
  ``generate(do_sample=False)``).
- Steps: a protocol step decodes ``rows_per_step`` rows of the grid (``num_steps = 24 /
  rows_per_step``). Previews decode only the finished rows, as a ``16r x 384`` strip pasted on
  grey: the VQ decoder accepts any latent height (the original ``VQModel.decode_code`` takes a
  shape, janus:janus/models/vq_model.py), whereas filling unknown rows with a placeholder code
  would leak into the finished rows through the decoder's attention and GroupNorm. A strip is not
  pixel-identical to the same rows of the final image for the same reason (its GroupNorm and
  attention see only the strip); once every row is finished the preview equals ``finish``.
- DPO (dpo/backends.py): ``sequence_logprob`` is the exact teacher-forced log-likelihood, optionally
  under the unconditional prompt (text dropout); ``encode`` turns the generator's PNGs back into
  codes through the VQ encoder.
- PARM++ self-correction: ``restart`` / ``final_tokens`` (protocol members, semantics in
  generation/refine.py) replay the kept rows into the KV cache, code by code as ``step`` feeds them, and decode the
  rest again (a raster model cannot condition on later codes).

Weights are read from a local folder or the Hugging Face cache, never downloaded. Use:

    torchrun --nproc_per_node=8 main.py --config configs/janus.yaml
    python -m pytest -q tests/test_janus.py      # tiny random Janus, CPU, seconds
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, DynamicCache, JanusForConditionalGeneration

from generation.base import RasterOutputs, check_restart_inputs, clone_generators, decision_stats, empty_token_stats, \
    finite_logits
from hub import local_snapshot
from generation.config import GenerationConfig
from generation.maskgit import gumbel, per_row_uniform

PROMPT_TEMPLATE = "<|User|>: {prompt}\n\n<|Assistant|>:"
"""Janus image-generation prompt, before ``<begin_of_image>`` (no system prompt in image mode)."""
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class JanusCanvas:
    attention_mask: torch.Tensor  # long [2B, L]: prompt mask (left padding = 0), then 1 per fed code
    positions: torch.Tensor  # long [2B]: position id of the next code fed to the model
    tokens: torch.Tensor  # long [B, N], -1 where not decoded yet
    next_logits: torch.Tensor  # float [2B, K] for the next slot: rows [0, B) cond, [B, 2B) uncond
    cache: DynamicCache = field(repr=False)
    generators: list[torch.Generator] = field(repr=False)
    token_stats: torch.Tensor = field(repr=False)  # float [B, 4], generation.base.Canvas.token_stats
    step_index: int = 0

    def select(self, index: torch.Tensor) -> "JanusCanvas":
        """Rows ``index`` of both guidance halves, with their own copy of the cache rows.

        ``step`` advances a canvas's cache in place, so continue only from the returned canvas.
        """
        both = torch.cat([index, index + len(self.tokens)]).to(self.tokens.device)
        return replace(self, attention_mask=self.attention_mask[both], positions=self.positions[both],
                       tokens=self.tokens[index], next_logits=self.next_logits[both],
                       cache=_select_cache(self.cache, both),
                       generators=clone_generators(self.generators, index.tolist()),
                       token_stats=self.token_stats[index.to(self.token_stats.device)])


def _select_cache(cache: DynamicCache, rows: torch.Tensor) -> DynamicCache:
    """A new cache holding ``rows`` of every layer (indexing copies, so the old cache is untouched)."""
    return DynamicCache([(layer.keys[rows], layer.values[rows]) for layer in cache.layers])


def weights_folder(name_or_path: str) -> str:
    """``generation.weights`` as a local folder: the folder itself or its snapshot in the HF cache."""
    return local_snapshot(name_or_path, lambda invalid, cache: ValueError(
        f"generation.weights={name_or_path!r} is neither a local folder nor a model in the Hugging Face "
        f"cache ({cache}); weights are never downloaded here. On a machine with internet "
        f"access run `hf download deepseek-community/Janus-Pro-1B` (or -7B) into that cache (HF_HOME moves "
        f"it), or `hf download deepseek-community/Janus-Pro-1B --local-dir DIR` and set "
        f"generation.weights=DIR. Without weights, configs/shapes.yaml runs the embedded shapes world on CPU."))


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Decoder output (about [-1, 1]) -> uint8, truncating as janus:generation_inference.py:98-101 does."""
    return ((pixels.float() + 1) / 2 * 255).clamp(0, 255).to(torch.uint8)


class JanusGenerator(RasterOutputs):
    """Janus-Pro text-to-image in raster order; see the module docstring for the conventions."""

    def __init__(self, cfg: GenerationConfig, device: torch.device | str = "cpu"):
        _check_config(cfg)
        self.cfg = cfg
        self.device = torch.device(device)
        folder = weights_folder(cfg.weights)
        self.model = JanusForConditionalGeneration.from_pretrained(folder, dtype=DTYPES[cfg.dtype]).to(self.device)
        self.model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.bos_id, self.pad_id, self.boi_id = _special_ids(self.model)
        self.grid = self.model.config.vq_config.num_patches
        assert self.grid ** 2 == self.model.config.vision_config.num_image_tokens, "Janus grids are square"
        if self.grid % cfg.rows_per_step:
            raise ValueError(f"generation.rows_per_step={cfg.rows_per_step} must divide the {self.grid}-row grid")
        self.num_steps = self.grid // cfg.rows_per_step
        self.patch = 2 ** (len(self.model.config.vq_config.channel_multiplier) - 1)
        """Pixels per code along each side (16 for Janus-Pro: 24 codes -> 384 px)."""
        self.image_size = self.grid * self.patch
        self.janus_guidance = 1 + cfg.guidance_scale
        """Janus's CFG scale ``s`` in ``uncond + s * (cond - uncond)`` (5 for ``guidance_scale: 4``)."""
        self.num_forwards = 0
        """Candidate-rows times model forwards (guidance rows not counted twice)."""

    # -- protocol -----------------------------------------------------------------------------
    @torch.inference_mode()
    def start(self, prompts: list[str], generators: list[torch.Generator]) -> JanusCanvas:
        if len(prompts) != len(generators):
            raise ValueError(f"got {len(prompts)} prompts but {len(generators)} generators; give one per row")
        ids, mask = self.encode_prompts(prompts)
        both = torch.cat([ids, self._unconditional(ids)])
        mask = mask.repeat(2, 1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: each row counts from its BOS
        cache = DynamicCache()
        hidden = self._language_model(self.model.get_input_embeddings()(both), mask, positions, cache)
        self.num_forwards += len(prompts)
        tokens = torch.full((len(prompts), self.grid ** 2), -1, dtype=torch.long, device=self.device)
        return JanusCanvas(mask, mask.sum(-1), tokens, self._head(hidden[:, -1]), cache, list(generators),
                           empty_token_stats(len(prompts), self.device))

    @torch.inference_mode()
    def step(self, canvas: JanusCanvas) -> JanusCanvas:
        if canvas.step_index >= self.num_steps:
            raise ValueError(f"canvas already ran all {self.num_steps} steps")
        b = len(canvas.tokens)
        tokens, logits, stats = canvas.tokens.clone(), canvas.next_logits, canvas.token_stats
        mask, positions = canvas.attention_mask, canvas.positions
        first = canvas.step_index * self.codes_per_step
        for slot in range(first, first + self.codes_per_step):
            code = self.sample(logits[:b], logits[b:], canvas.generators)
            stats = stats + decision_stats(self.guided_logits(logits[:b], logits[b:]), logits[:b], logits[b:], code)
            tokens[:, slot] = code
            if slot + 1 == tokens.shape[1]:
                break  # generate() runs one more forward whose logits nobody reads
            mask, positions, logits = self._feed(code, mask, positions, canvas.cache)
        return replace(canvas, attention_mask=mask, positions=positions, tokens=tokens, next_logits=logits,
                       token_stats=stats, step_index=canvas.step_index + 1)

    @torch.inference_mode()
    def lookahead(self, canvas: JanusCanvas) -> torch.Tensor:
        """Greedy (guided argmax) decoding of the codes not decoded yet, on a copy of the canvas; the
        forwards are counted like ``step``'s."""
        b = len(canvas.tokens)
        copy = canvas.select(torch.arange(b))  # own cache rows: ``_feed`` advances them in place
        tokens, logits = copy.tokens.clone(), copy.next_logits
        mask, positions = copy.attention_mask, copy.positions
        for slot in range(canvas.step_index * self.codes_per_step, tokens.shape[1]):
            code = self.guided_logits(logits[:b], logits[b:]).argmax(-1)
            tokens[:, slot] = code
            if slot + 1 == tokens.shape[1]:
                break
            mask, positions, logits = self._feed(code, mask, positions, copy.cache)
        return self.decode(tokens)

    # -- PARM++ self-correction (preview, finish, final_tokens: base.RasterOutputs) ------------
    @torch.inference_mode()
    def restart(self, prompts: list[str], tokens: torch.Tensor, regenerate: torch.Tensor,
                generators: list[torch.Generator]) -> JanusCanvas:
        """A canvas at the step (block of rows) holding the first flagged code of any row, with the kept
        codes before it fed to both guidance halves as ``step`` feeds them (one forward per code, counted
        the same way); ``step`` decodes that block and everything after it again, as refine.py's raster
        restart and ``LlamaGenGenerator.restart`` do."""
        check_restart_inputs(prompts, tokens, regenerate, self.grid ** 2)
        canvas = self.start(prompts, generators)  # prefills the prompt (one forward per candidate)
        tokens = tokens.to(self.device)
        step = int(regenerate.int().argmax(-1).min()) // self.codes_per_step
        kept = step * self.codes_per_step
        mask, positions, logits = canvas.attention_mask, canvas.positions, canvas.next_logits
        for slot in range(kept):
            mask, positions, logits = self._feed(tokens[:, slot], mask, positions, canvas.cache)
        fresh = torch.full_like(tokens, -1)
        fresh[:, :kept] = tokens[:, :kept]
        return replace(canvas, attention_mask=mask, positions=positions, tokens=fresh, next_logits=logits,
                       step_index=step)

    # -- decoding and scoring -----------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``long [B, 576]`` codes -> ``uint8 [B, 3, H, W]`` through transformers' ``decode_image_tokens``."""
        return to_uint8(self.model.decode_image_tokens(tokens.to(self.device)).permute(0, 3, 1, 2))

    @torch.inference_mode()
    def decode_rows(self, tokens: torch.Tensor) -> torch.Tensor:
        """The first ``r`` grid rows, ``long [B, r*24]`` -> ``uint8 [B, 3, 16r, 384]``.

        ``JanusVQVAE.decode`` with the latent height ``r`` instead of 24: codebook lookup,
        L2-normalise, ``post_quant_conv``, decoder (tf:modeling_janus.py ``JanusVQVAE.decode`` and
        ``JanusVQVAEVectorQuantizer.get_codebook_entry``).
        """
        vq = self.model.model.vqmodel
        rows = tokens.shape[1] // self.grid
        latents = F.normalize(vq.quantize.embedding(tokens.to(self.device)), p=2, dim=-1)
        latents = latents.view(len(tokens), rows, self.grid, -1).permute(0, 3, 1, 2).contiguous()
        return to_uint8(vq.decoder(vq.post_quant_conv(latents)))

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``uint8 [B, 3, H, W]`` images (``H = W = image_size``) -> ``long [B, N]`` codes, the inverse of ``decode``.

        transformers' VQ encoder and ``quant_conv`` (tf:modeling_janus.py ``JanusVQVAE.encode``), then the
        nearest code after L2-normalising both the latents and the codebook, as the original quantizer
        does (janus:janus/models/vq_model.py ``VectorQuantizer.forward``, ``codebook_l2_norm=True``).
        transformers' ``JanusVQVAEVectorQuantizer.forward`` compares against the raw codebook, which picks
        other codes whenever code norms differ; decoding normalises (``get_codebook_entry``), so the
        normalised match is the one ``decode`` inverts. Pixels enter as ``x / 127.5 - 1``, the inverse of
        ``to_uint8`` (janus:generation_inference.py:98-101).
        """
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != \
                (3, self.image_size, self.image_size):
            raise ValueError(f"Janus's VQ encodes uint8 [B, 3, {self.image_size}, {self.image_size}] images (the "
                             f"generator's own outputs), got {images.dtype} {tuple(images.shape)}")
        vq = self.model.model.vqmodel
        pixels = images.to(self.device, vq.quant_conv.weight.dtype) / 127.5 - 1
        latents = vq.quant_conv(vq.encoder(pixels)).flatten(2).transpose(1, 2)  # [B, N, C], raster order
        codebook = F.normalize(vq.quantize.embedding.weight, p=2, dim=-1)
        # Between unit vectors the smallest distance is the largest dot product.
        return (F.normalize(latents, p=2, dim=-1) @ codebook.T).argmax(-1)

    def sequence_logprob(self, prompts: list[str], tokens: torch.Tensor,
                         drop_text: torch.Tensor | None = None) -> torch.Tensor:
        """``float [B]``: log p(tokens | prompt), teacher-forced, with gradients.

        One forward over ``[prompt embeddings; generation embeddings of tokens]``; code ``j`` is scored
        by ``generation_head`` at the position before it, as in sampling (no guidance, temperature 1).
        ``drop_text`` (``bool [B]``, None = all False): rows scored under the unconditional prompt, the
        pad-replaced ids of the sampler's guidance rows (``_unconditional``, same attention mask): DPO's
        text dropout trains the unconditional half of classifier-free guidance too.
        """
        ids, mask = self.encode_prompts(prompts)
        if drop_text is not None:
            ids = torch.where(drop_text.to(self.device)[:, None], self._unconditional(ids), ids)
        tokens = tokens.to(self.device).clone()  # a canvas's tokens are inference tensors; autograd refuses them
        embeds = torch.cat([self.model.get_input_embeddings()(ids),
                            self.model.prepare_embeddings_for_image_generation(tokens)], 1)
        mask = torch.cat([mask, mask.new_ones(tokens.shape)], 1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self._language_model(embeds, mask, positions, None)
        logits = self.model.model.generation_head(hidden[:, ids.shape[1] - 1: -1]).float()
        return logits.log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1).sum(-1)

    def sample(self, cond: torch.Tensor, uncond: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """``long [B]`` codes from the generation-head logits of the two guidance halves."""
        logits = self.processed_logits(cond, uncond)
        if self.cfg.temperature == 0:
            return logits.argmax(-1)
        # Gumbel-max: argmax(logits + Gumbel noise) is one draw from softmax(logits).
        return (logits + gumbel(per_row_uniform((logits.shape[-1],), generators, logits.device))).argmax(-1)

    def processed_logits(self, cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
        """generate()'s processed scores: guidance, then temperature, then top-k (greedy: guidance only)."""
        logits = self.guided_logits(cond, uncond)
        if self.cfg.temperature == 0:
            return logits
        logits = logits / self.cfg.temperature
        if self.cfg.top_k:
            kth = logits.topk(self.cfg.top_k, -1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))  # as TopKLogitsWarper
        return logits

    def guided_logits(self, cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
        """``uncond + s * (cond - uncond)``, written as ClassifierFreeGuidanceLogitsProcessor writes it."""
        return finite_logits(uncond + (cond - uncond) * self.janus_guidance)

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ``(ids, attention_mask)``, both ``long [B, L]``, each row BOS ... BOI."""
        boi = self.tokenizer.convert_ids_to_tokens(self.boi_id)
        rows = [self.tokenizer(PROMPT_TEMPLATE.format(prompt=p) + boi)["input_ids"] for p in prompts]
        for row in rows:
            if row[0] != self.bos_id or row[-1] != self.boi_id:
                raise ValueError(f"the tokenizer in {self.cfg.weights} encodes a Janus prompt as {row[:3]}...{row[-3:]}; "
                                 f"expected BOS ({self.bos_id}) first and <begin_of_image> ({self.boi_id}) last")
        length = max(map(len, rows))
        ids = torch.tensor([[self.pad_id] * (length - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows], device=self.device)
        return ids, mask

    # -- helpers ------------------------------------------------------------------------------
    @property
    def codes_per_step(self) -> int:
        return self.cfg.rows_per_step * self.grid

    def _feed(self, codes: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: DynamicCache
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Feed ``codes`` (``long [B]``) to both guidance halves: ``(mask, positions, next_logits)`` after it.

        One forward of ``2B`` rows, counted as ``B`` (guidance rows are not counted twice).
        """
        b = len(codes)
        mask = torch.cat([mask, mask.new_ones(2 * b, 1)], 1)
        embeds = self.model.prepare_embeddings_for_image_generation(codes.repeat(2)[:, None])
        hidden = self._language_model(embeds, mask, positions[:, None], cache)
        self.num_forwards += b
        return mask, positions + 1, self._head(hidden[:, -1])

    def _unconditional(self, ids: torch.Tensor) -> torch.Tensor:
        """Every token but BOS and BOI replaced by pad (generate(); janus:generation_inference.py:69-75)."""
        keep = (ids == self.bos_id) | (ids == self.boi_id)
        return torch.where(keep, ids, self.pad_id)

    def _language_model(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                        cache: DynamicCache | None) -> torch.Tensor:
        out = self.model.model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                              cache=cache, use_cache=cache is not None)
        return out.last_hidden_state

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Generation-head logits in float32 (sampling arithmetic stays in full precision)."""
        return self.model.model.generation_head(hidden).float()


def _check_config(cfg: GenerationConfig) -> None:
    if cfg.order != "raster":
        raise ValueError(f"Janus decodes in raster order only; set generation.order=raster (got {cfg.order!r})")
    if cfg.dtype not in DTYPES:
        raise ValueError(f"generation.dtype={cfg.dtype!r}; valid: {sorted(DTYPES)}")
    if cfg.temperature < 0:
        raise ValueError(f"generation.temperature={cfg.temperature} must be >= 0 (0 = greedy)")
    if cfg.top_k < 0:
        raise ValueError(f"generation.top_k={cfg.top_k} must be >= 0 (0 = no top-k)")
    if cfg.rows_per_step < 1:
        raise ValueError(f"generation.rows_per_step={cfg.rows_per_step} must be >= 1")


def _special_ids(model: JanusForConditionalGeneration) -> tuple[int, int, int]:
    """``(bos, pad, begin_of_image)`` from the checkpoint's generation config, as generate() reads them."""
    gen = model.generation_config
    boi = (gen.generation_kwargs or {}).get("boi_token_id")
    if gen.bos_token_id is None or gen.pad_token_id is None or boi is None:
        raise ValueError("the Janus checkpoint's generation_config.json lacks bos_token_id, pad_token_id or "
                         "generation_kwargs.boi_token_id (transformers' convert_janus_weights_to_hf.py writes them); "
                         "use a converted checkpoint such as deepseek-community/Janus-Pro-1B")
    return gen.bos_token_id, gen.pad_token_id, boi
