"""Show-o (showlab/show-o, the paper's generator) behind the step-wise protocol.

Show-o is phi-1.5 (``PhiForCausalLM`` with per-head q/k LayerNorm) over one vocabulary of text
ids, 10 special tokens and the 8192 MAGVIT-v2 codes; it paints a 16x16 token grid by mask-predict
(MaskGIT) decoding with classifier-free guidance (upstream showlab/Show-o models/modeling_showo.py
``t2i_generate``; the paper's settings in upstream Image-Generation-CoT config.yaml).
This module rebuilds it on stock transformers and runs the loop through ``generation.maskgit``:

- weights: Show-o's ``config.json`` + ``pytorch_model.safetensors`` (diffusers ``ModelMixin``, keys
  ``showo.<phi key>``) or an upstream DPO folder (``config.json`` + ``pytorch_model.bin``, same keys),
  loaded strictly after stripping ``showo.``. The phi-1.5 config + tokenizer come from ``<weights>/llm``
  if that folder exists, otherwise from the config's ``llm_model_path`` (``microsoft/phi-1_5``) as a
  local folder or HF-cache id. Nothing is ever downloaded.
- prompt: upstream ``UniversalPrompting.t2i_gen_prompt`` (training/prompting_utils.py): ``[PAD]``*k,
  ``<|t2i|>``, bos, text, eos (129 ids), ``<|soi|>``, N image ids, ``<|eoi|>``. Image code ``c`` is id
  ``llm_vocab_size + 10 + c``; unknown positions hold ``<mask>`` = ``vocab_size - 1``. The guidance
  row uses the empty prompt and copies the current image part (upstream modeling_showo.py t2i_generate).
- attention: ``create_attention_mask_predict_next(..., rm_pad_in_image=True)`` semantics as an
  additive ``[B, 1, L, L]`` mask in the model dtype, which transformers 5 passes through unchanged
  (masking_utils ``_preprocess_mask_arguments``: a 4D mask is returned as-is) to SDPA.

Canvas tokens are MAGVIT codes ``0..8191`` with ``mask_code = 8192`` where unknown.

Deliberate differences from upstream (none changes the distribution being sampled):
- Randomness: per-candidate ``torch.Generator`` streams (Gumbel-max sampling instead of the global
  ``torch.multinomial``), see generation/maskgit.py.
- Logits: only the 8192 code columns of ``lm_head`` are computed (upstream computes all 58498 and
  slices ``[llm_vocab_size+10 : -1]``); guidance is applied after that slice, which is elementwise
  the same.
- The additive mask uses ``finfo(dtype).min`` instead of ``iinfo(int64).min`` cast to fp32 (both give
  exactly zero attention weight), and attention runs through SDPA instead of phi.py's eager path.
- ``guidance_scale == 0`` skips the unconditional rows, as upstream does; negative values raise.
- ``temperature_schedule="upstream"`` carries the re-masking temperature from one finished image to
  the next image *of the same prompt text* (upstream resets it per ``t2i_generate`` call, i.e. per
  prompt, and never between that prompt's images), so all rows of one ``start`` must share it.
- ``preview`` before the first step decodes the all-mask sample clamped to code 8191, as upstream's
  ``clamp(sampled_ids, 0, codebook_size - 1)`` would.

PARM++ self-correction: ``restart`` / ``final_tokens`` (protocol members, semantics in generation/refine.py)
commit the kept codes, set the flagged ones to ``mask_code`` and resume mask-predict at
``refine.resume_step`` with the temperature the schedule had reached there (MaskGIT-style inpainting).

Usage: ``build_generator(GenerationConfig(backend="showo"), "cuda")``; needs ``showlab/show-o``,
``showlab/magvitv2`` and the ``microsoft/phi-1_5`` config + tokenizer in the HF cache or local folders.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from generation.base import check_finished, check_restart_inputs, clone_generators, decided_now, decision_stats, \
    empty_token_stats
from generation.config import GenerationConfig
from generation.magvitv2 import MagvitV2, load_magvitv2, read_state_dict, resolve_checkpoint
from generation.maskgit import TEMPERATURE_SCHEDULES, guided_logits, maskgit_step, step_temperature
from generation.refine import resume_step

SPECIAL_TOKENS = ("<|soi|>", "<|eoi|>", "<|sov|>", "<|eov|>", "<|t2i|>", "<|mmu|>", "<|t2v|>", "<|v2v|>", "<|lvg|>")
"""Added after ``[PAD]``, in this order (prompting_utils.py ``UniversalPrompting.__init__``)."""
NUM_NEW_SPECIAL_TOKENS = 1 + len(SPECIAL_TOKENS)
MAX_TEXT_LEN = 128
"""Upstream ``dataset.preprocessing.max_seq_length``; the text part is ``MAX_TEXT_LEN + 1`` ids with ``<|t2i|>``."""
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

HOW_TO_GET_WEIGHTS = (
    "Download them on a machine with internet: `hf download showlab/show-o` (generator), "
    "`hf download showlab/magvitv2` (image tokenizer) and `hf download microsoft/phi-1_5 config.json "
    "tokenizer.json tokenizer_config.json vocab.json merges.txt added_tokens.json special_tokens_map.json` "
    "(LLM config + tokenizer), into the HF cache, or as local folders named by generation.weights / "
    "generation.tokenizer (a Show-o folder may hold the phi-1.5 files in its llm/ subfolder). "
    "Without these checkpoints, run the CPU shapes preset instead: --config configs/shapes.yaml.")


# -- checkpoint ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShowoSpec:
    """Vocabulary layout from Show-o's ``config.json`` (upstream config.yaml: 58498 = 50295 + 10 + 8192 + 1)."""

    vocab_size: int
    llm_vocab_size: int
    codebook_size: int
    num_vq_tokens: int
    mask_token_id: int
    llm_model_path: str

    @property
    def image_offset(self) -> int:
        """Token id of code 0 (modeling_showo.py: ``llm_vocab_size + num_new_special_tokens``)."""
        return self.llm_vocab_size + NUM_NEW_SPECIAL_TOKENS


def read_showo_spec(folder: Path) -> ShowoSpec:
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(f"Show-o folder {folder} has no config.json. {HOW_TO_GET_WEIGHTS}")
    raw = json.loads(path.read_text())
    missing = [k for k in ("vocab_size", "llm_vocab_size", "codebook_size", "num_vq_tokens") if k not in raw]
    if missing:
        raise ValueError(f"{path} lacks {missing}; is it a Show-o (diffusers ModelMixin) config?")
    if raw.get("w_clip_vit", False):
        raise ValueError(f"{path}: w_clip_vit=true (CLIP-ViT understanding variant) is not a t2i checkpoint")
    spec = ShowoSpec(vocab_size=raw["vocab_size"], llm_vocab_size=raw["llm_vocab_size"],
                     codebook_size=raw["codebook_size"], num_vq_tokens=raw["num_vq_tokens"],
                     mask_token_id=raw.get("mask_token_id", raw["vocab_size"] - 1),
                     llm_model_path=raw.get("llm_model_path", "microsoft/phi-1_5"))
    if spec.image_offset + spec.codebook_size + 1 != spec.vocab_size or spec.mask_token_id != spec.vocab_size - 1:
        raise ValueError(f"{path}: vocab_size {spec.vocab_size} is not llm_vocab_size + 10 + codebook_size + 1 "
                         f"with <mask> last (mask_token_id {spec.mask_token_id})")
    return spec


def read_showo_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Phi state dict: every checkpoint key is ``showo.<key>`` (the ``Showo.showo`` submodule)."""
    state = read_state_dict(folder, "Show-o")
    foreign = sorted(k for k in state if not k.startswith("showo."))
    if foreign:
        raise ValueError(f"{folder}: keys outside the Show-o LLM, e.g. {foreign[:3]}; expected only 'showo.*'")
    return {k.removeprefix("showo."): v for k, v in state.items()}


def llm_folder(weights: Path, spec: ShowoSpec) -> Path:
    """Where the phi-1.5 ``config.json`` and tokenizer live (see the module docstring)."""
    local = weights / "llm"
    if local.is_dir():
        return local
    return resolve_checkpoint(spec.llm_model_path, "phi-1.5 config/tokenizer", HOW_TO_GET_WEIGHTS)


def build_phi(folder: Path, spec: ShowoSpec, state: dict[str, torch.Tensor], device, dtype: torch.dtype):
    """``PhiForCausalLM`` as Show-o's phi.py: q/k LayerNorm forced on, no cache, Show-o vocabulary."""
    from accelerate import init_empty_weights
    from transformers import PhiConfig, PhiForCausalLM

    config = PhiConfig.from_pretrained(folder)
    config.qk_layernorm = True  # phi.py:1088 forces it; the checkpoint has q/k_layernorm weights
    config.use_cache = False
    config.vocab_size = spec.vocab_size
    config._attn_implementation = "sdpa"
    with init_empty_weights():  # parameters on meta, buffers (rotary inv_freq) real
        model = PhiForCausalLM(config)
    # Cast the weights, not the module: the rotary inv_freq buffers must stay fp32.
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    return model.to(device).eval()


@dataclass(frozen=True)
class PromptIds:
    pad: int
    bos: int
    eos: int
    soi: int
    eoi: int
    t2i: int


def load_text_tokenizer(folder: Path, spec: ShowoSpec):
    """phi-1.5 tokenizer + Show-o's specials; ids checked against the checkpoint's vocabulary layout."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    if len(tokenizer) != spec.llm_vocab_size:
        raise ValueError(f"tokenizer at {folder} has {len(tokenizer)} tokens but the Show-o checkpoint expects "
                         f"llm_vocab_size={spec.llm_vocab_size}; use the microsoft/phi-1_5 tokenizer")
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    tokenizer.add_tokens(list(SPECIAL_TOKENS))
    names = ("[PAD]",) + SPECIAL_TOKENS
    got = tokenizer.convert_tokens_to_ids(list(names))
    expected = list(range(spec.llm_vocab_size, spec.image_offset))
    if got != expected:
        raise ValueError(f"Show-o special tokens got ids {dict(zip(names, got))}, "
                         f"expected {expected[0]}..{expected[-1]}")
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer at {folder} has no bos/eos token (phi-1.5 uses <|endoftext|> for both)")
    ids = dict(zip(names, got))
    return tokenizer, PromptIds(pad=ids["[PAD]"], bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id,
                                soi=ids["<|soi|>"], eoi=ids["<|eoi|>"], t2i=ids["<|t2i|>"])


# -- prompt and attention mask ---------------------------------------------------------------------
def text_prefix(token_ids: list[int], ids: PromptIds, max_text_len: int = MAX_TEXT_LEN) -> list[int]:
    """The ``max_text_len + 1`` text ids of upstream ``t2i_gen_prompt``: left pads, ``<|t2i|>``, bos, text, eos."""
    if not token_ids or token_ids[0] != ids.bos:
        token_ids = [ids.bos] + list(token_ids)
    seq = [ids.t2i] + token_ids + [ids.eos]
    width = max_text_len + 1
    if len(seq) <= width:
        return [ids.pad] * (width - len(seq)) + seq
    return seq[:width - 1] + [ids.eos]  # too long: truncate, keep eos last (upstream)


def attention_mask(input_ids: torch.Tensor, ids: PromptIds, dtype: torch.dtype) -> torch.Tensor:
    """Additive ``[B, 1, L, L]`` mask (0 = attend) with ``create_attention_mask_predict_next`` semantics.

    Rows outside ``<|soi|> ... <|eoi|>`` are causal, and rows after the last pad do not see the pads
    (``rm_pad_in_image=True``); rows inside it see every non-pad position, both directions
    (prompting_utils.py lines 466-511).
    """
    length = input_ids.shape[1]
    pos = torch.arange(length, device=input_ids.device)
    is_pad = input_ids == ids.pad
    is_soi, is_eoi = input_ids == ids.soi, input_ids == ids.eoi
    in_image = (is_soi.cumsum(1) > is_eoi.cumsum(1)) | is_soi | is_eoi  # [B, L]
    last_pad = torch.where(is_pad, pos, -1).amax(1)[:, None, None]  # [B, 1, 1]; -1 without pads
    causal = pos[None, :, None] >= pos[None, None, :]  # [1, L, L]
    after_pads_sees_pad = (pos[None, :, None] > last_pad) & (pos[None, None, :] <= last_pad)
    text_rows = causal & ~after_pads_sees_pad
    image_rows = ~is_pad[:, None, :]
    allowed = torch.where(in_image[:, :, None], image_rows, text_rows)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=input_ids.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


# -- the backend -----------------------------------------------------------------------------------
@dataclass
class ShowoCanvas:
    text: torch.Tensor  # long [B, 129]: the conditional text part of the prompt
    tokens: torch.Tensor  # long [B, N] codes, mask_code where unknown
    sampled: torch.Tensor  # long [B, N] the last full sample (mask_code before the first step)
    generators: list[torch.Generator]
    temperature: float  # re-masking temperature of the last step (the start value before any)
    prompts: list[str]
    token_stats: torch.Tensor  # float [B, 4], generation.base.Canvas.token_stats
    step_index: int = 0

    def select(self, index: torch.Tensor) -> "ShowoCanvas":
        rows = index.tolist()
        return replace(self, text=self.text[index], tokens=self.tokens[index], sampled=self.sampled[index],
                       generators=clone_generators(self.generators, rows),
                       prompts=[self.prompts[i] for i in rows], token_stats=self.token_stats[index])


class ShowoGenerator:
    def __init__(self, cfg: GenerationConfig, device: torch.device | str = "cpu"):
        if cfg.order != "mask":
            raise ValueError(f"Show-o decodes by mask-predict only; set generation.order=mask, got {cfg.order!r}")
        if cfg.dtype not in DTYPES:
            raise ValueError(f"generation.dtype must be one of {sorted(DTYPES)}, got {cfg.dtype!r}")
        if cfg.temperature_schedule not in TEMPERATURE_SCHEDULES:
            raise ValueError(f"unknown temperature_schedule {cfg.temperature_schedule!r}; "
                             f"valid: {TEMPERATURE_SCHEDULES}")
        if cfg.guidance_scale < 0:
            raise ValueError(f"generation.guidance_scale must be >= 0 (0 = no guidance), got {cfg.guidance_scale}")
        self.cfg = cfg
        self.device = torch.device(device)
        self.dtype = DTYPES[cfg.dtype]
        weights = resolve_checkpoint(cfg.weights, "Show-o weights", HOW_TO_GET_WEIGHTS)
        self.spec = read_showo_spec(weights)
        llm = llm_folder(weights, self.spec)
        self.model = build_phi(llm, self.spec, read_showo_weights(weights), self.device, self.dtype)
        self.text_tokenizer, self.ids = load_text_tokenizer(llm, self.spec)
        self.vq: MagvitV2 = load_magvitv2(cfg.tokenizer, self.device, self.dtype)
        if self.vq.codebook_size != self.spec.codebook_size:
            raise ValueError(f"MAGVIT-v2 at {cfg.tokenizer!r} has {self.vq.codebook_size} codes, "
                             f"Show-o expects {self.spec.codebook_size}")
        side = int(round(self.spec.num_vq_tokens ** 0.5))
        if side * side != self.spec.num_vq_tokens:
            raise ValueError(f"num_vq_tokens={self.spec.num_vq_tokens} is not a square grid")
        self.grid = (side, side)
        self.image_size = side * self.vq.cfg.downsample_factor
        self.num_steps = cfg.num_steps
        self.mask_code = self.spec.codebook_size
        self.uncond_text = self._text_ids([""])  # [1, 129]
        self.num_forwards = 0
        """Candidate-rows times model forwards (guidance rows not counted twice)."""
        self._carried_temperature: dict[str, float] = {}
        """``upstream`` schedule: prompt -> temperature its next image starts from."""

    # -- protocol -----------------------------------------------------------------------------
    @torch.inference_mode()
    def start(self, prompts: list[str], generators: list[torch.Generator]) -> ShowoCanvas:
        if len(prompts) != len(generators):
            raise ValueError(f"{len(prompts)} prompts but {len(generators)} generators")
        masked = torch.full((len(prompts), self.spec.num_vq_tokens), self.mask_code, device=self.device)
        return ShowoCanvas(self._text_ids(prompts), masked, masked.clone(), list(generators),
                           self._start_temperature(prompts), list(prompts),
                           empty_token_stats(len(prompts), self.device))

    @torch.inference_mode()
    def step(self, canvas: ShowoCanvas) -> ShowoCanvas:
        if canvas.step_index >= self.num_steps:
            raise ValueError(f"canvas already ran all {self.num_steps} steps")
        b = len(canvas.text)
        guided = self.cfg.guidance_scale > 0
        text = torch.cat([canvas.text, self.uncond_text.expand(b, -1)]) if guided else canvas.text
        logits = self.image_logits(self.input_ids(text, canvas.tokens.repeat(2 if guided else 1, 1)))
        self.num_forwards += b
        cond, uncond = (logits[:b], logits[b:]) if guided else (None, None)
        if guided:
            logits = guided_logits(cond, uncond, self.cfg.guidance_scale)
        temperature = step_temperature(self.cfg.temperature, canvas.temperature, canvas.step_index,
                                       self.num_steps, self.cfg.temperature_schedule)
        tokens, sampled = maskgit_step(logits, canvas.tokens, self.mask_code, canvas.step_index, self.num_steps,
                                       temperature, canvas.generators)
        if canvas.step_index + 1 == self.num_steps and self.cfg.temperature_schedule == "upstream":
            self._carried_temperature.update({p: temperature for p in canvas.prompts})
        decided = decided_now(canvas.tokens, tokens, self.mask_code, canvas.step_index + 1 == self.num_steps)
        stats = canvas.token_stats + decision_stats(logits, cond, uncond, sampled, decided)
        return replace(canvas, tokens=tokens, sampled=sampled, temperature=temperature, token_stats=stats,
                       step_index=canvas.step_index + 1)

    @torch.inference_mode()
    def preview(self, canvas: ShowoCanvas) -> torch.Tensor:
        return self.decode(canvas.sampled.clamp(0, self.spec.codebook_size - 1))

    def lookahead(self, canvas: ShowoCanvas) -> torch.Tensor:
        """Mask-predict's full guess is already a completion: the preview, no forward."""
        return self.preview(canvas)

    @torch.inference_mode()
    def finish(self, canvas: ShowoCanvas) -> torch.Tensor:
        check_finished(canvas, self.num_steps, "finish")
        return self.decode(canvas.sampled)

    # -- PARM++ self-correction (semantics: generation/refine.py) -----------------------------
    def final_tokens(self, canvas: ShowoCanvas) -> torch.Tensor:
        """``long [B, N]`` codes of a finished canvas (what ``finish`` decodes: the last full sample;
        ``tokens`` keeps at least one position masked)."""
        check_finished(canvas, self.num_steps)
        return canvas.sampled

    @torch.inference_mode()
    def restart(self, prompts: list[str], tokens: torch.Tensor, regenerate: torch.Tensor,
                generators: list[torch.Generator]) -> ShowoCanvas:
        """A canvas holding ``tokens`` where ``regenerate`` (``bool [B, N]``) is False and ``mask_code`` where
        it is True, at the last schedule step that still has that many positions unknown (as refine.py's
        mask restart does); committed codes are never re-masked, so ``step`` fills only the flagged ones.

        The temperature is the one the schedule had reached by that step, starting from what ``start``
        gives (``temperature_schedule=upstream``: the prompt's carried temperature, as ``step`` would).
        """
        check_restart_inputs(prompts, tokens, regenerate, self.spec.num_vq_tokens)
        canvas = self.start(prompts, generators)  # no forward: the mask-predict loop starts from the canvas
        tokens, regenerate = tokens.to(self.device), regenerate.to(self.device)
        masked = torch.where(regenerate, self.mask_code, tokens)
        step = resume_step(masked.shape[1], self.num_steps, int(regenerate.sum(-1).max()))
        temperature = canvas.temperature
        for done in range(step):  # step() anneals once per step done, from the start value
            temperature = step_temperature(self.cfg.temperature, temperature, done, self.num_steps,
                                           self.cfg.temperature_schedule)
        return replace(canvas, tokens=masked, sampled=masked.clone(), temperature=temperature, step_index=step)

    # -- model pieces (also used for DPO and re-encoding) --------------------------------------
    def input_ids(self, text: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """``long [B, 129 + N + 2]``: text part, ``<|soi|>``, image ids (``<mask>`` for ``mask_code``), ``<|eoi|>``."""
        image = torch.where(codes == self.mask_code, self.spec.mask_token_id, codes + self.spec.image_offset)
        soi = torch.full_like(image[:, :1], self.ids.soi)
        return torch.cat([text, soi, image, torch.full_like(soi, self.ids.eoi)], dim=1)

    def image_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``float [B, N, codebook_size]`` logits of the image positions over the codes (fp32)."""
        mask = attention_mask(input_ids, self.ids, self.dtype)
        hidden = self.model.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        n, first = self.spec.num_vq_tokens, self.spec.image_offset
        head = self.model.lm_head
        rows = slice(first, first + self.spec.codebook_size)
        return F.linear(hidden[:, -(n + 1):-1], head.weight[rows], head.bias[rows]).float()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``uint8 [B, 3, H, W]`` from codes, as upstream saves images (``clamp((x+1)/2) * 255``, truncated)."""
        images = self.vq.decode_codes(codes.to(self.device), self.grid)
        return (((images + 1) / 2).clamp(0, 1) * 255).to(torch.uint8)

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Codes ``long [B, N]`` of ``uint8 [B, 3, H, W]`` images (mapped to ``[-1, 1]`` as Show-o's transform)."""
        return self.vq.encode_codes(images.to(self.device).float() / 127.5 - 1)

    def _text_ids(self, prompts: list[str]) -> torch.Tensor:
        rows = [text_prefix(self.text_tokenizer(p)["input_ids"], self.ids) for p in prompts]
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def _start_temperature(self, prompts: list[str]) -> float:
        if self.cfg.temperature_schedule != "upstream":
            return self.cfg.temperature
        starts = {self._carried_temperature.get(p, self.cfg.temperature) for p in prompts}
        if len(starts) > 1:
            raise ValueError("temperature_schedule=upstream: the rows of one start() carry different temperatures "
                             f"{sorted(starts)}; start each prompt's images separately, as upstream does")
        return starts.pop()


