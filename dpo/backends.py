"""What ``dpo.train`` needs from each generator family: load, encode pairs, score them, save.

``BACKENDS`` maps ``--backend`` to an adapter class built as ``Class(generation, reference)``:
``generation`` is the run config's ``generation:`` section (``generation/config.py``) whose
``weights`` the policy starts from, ``reference`` the frozen reference's weights (same place, same
format). Every adapter loads through the project's own loader and writes its result in the
format that loader reads, so the trained weights go straight back into ``main.py``:

- ``tiny``: the shapes-world ``TinyT2I`` (``FOLDER/generator`` + ``FOLDER/tokenizer``), both
  likelihood orders of ``dpo.likelihood`` (``generation.order``).
- ``showo``: Show-o's phi (``generation/showo.py``), masked-token likelihood; MAGVIT-v2 frozen.
  Output: ``config.json`` + ``pytorch_model.safetensors`` (``showo.``-prefixed phi keys) + the
  init's ``llm/`` folder if it has one, the layout of upstream's released ``ckpts/dpo``.
- ``janus``: Janus-Pro's language model and image-generation embeddings/aligner/head
  (``generation/janus.py``), exact sequence likelihood; SigLIP encoder, its aligner, the VQ and the
  text ``lm_head`` frozen (unused by text-to-image). Output: ``save_pretrained`` + the init's
  tokenizer/processor files (``generation.weights=OUT`` or ``--dpo_model OUT``).
- ``llamagen``: the LlamaGen GPT (``generation/llamagen.py``), exact sequence likelihood; T5 and
  the VQ decoder frozen. Output: ``OUT/t2i_dpo.pt``, a raw ``{"model": state_dict}`` file as
  LlamaGen's train_t2i.py writes (``generation.weights=OUT`` or ``--dpo_model OUT`` finds it there).

Every backend applies the draw's text dropout (upstream ``cond_dropout`` 0.1): a dropped pair is
scored, for policy and reference alike, under the unconditional prompt its generator's guidance
rows use (tiny: all-pad text; Show-o: the empty prompt; Janus: the pad-replaced prompt ids;
LlamaGen: the learned null caption).

Pairs hold image token lists or image paths. Paths need the backend's image encoder: the tiny
patch tokenizer, Show-o's MAGVIT-v2 (``ShowoGenerator.encode``) and Janus's VQ
(``JanusGenerator.encode``) have one; LlamaGen's VQ loads decoder-only, so its pair files must hold
token lists (the codes the generator sampled).

The real backends hand the trainer a ``LikelihoodModule``: the generator's model registered as a
submodule, with the backend's likelihood as ``forward``. DDP arms its gradient all-reduce in
``forward`` and FSDP unshards there, while the likelihoods call into pieces of ``generator.model``
directly; routing them through ``forward`` is what lets ``accelerator.prepare`` wrap them.
"""
from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Protocol

import torch
from torch import nn

from dpo.likelihood import TINY_SCORERS, MaskDraw, pair_logprobs, raster_backend_logprob, showo_masked_logprob, \
    showo_text_ids
from dpo.pairs import load_images
from generation.config import GenerationConfig

REPO = Path(__file__).resolve().parents[1]
PRESETS = {"tiny": "configs/shapes.yaml", "showo": "config.yaml", "janus": "configs/janus.yaml",
           "llamagen": "configs/llamagen.yaml"}
"""``--backend`` -> the run config (relative to the repo) whose ``generation:`` section is used without ``--config``."""
LLAMAGEN_FILE = "t2i_dpo.pt"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".index.json")
"""Files of a transformers folder that are weights, not tokenizer/processor/config files."""


@dataclass
class Pairs:
    """Encoded pairs, row ``i`` = pair ``i`` of the pair file."""

    text: torch.Tensor | list[str]
    """Text ids ``long [P, T]`` (tiny, Show-o) or the prompts themselves (Janus, LlamaGen)."""
    chosen: torch.Tensor  # long [P, N] image codes
    rejected: torch.Tensor  # long [P, N]
    weight: torch.Tensor  # float [P]

    def rows(self, index: torch.Tensor, device: torch.device | str) -> "Pairs":
        text = ([self.text[i] for i in index.tolist()] if isinstance(self.text, list)
                else self.text[index].to(device))
        return Pairs(text, self.chosen[index].to(device), self.rejected[index].to(device),
                     self.weight[index].to(device))


class Backend(Protocol):
    generation: GenerationConfig
    """The generator's settings; ``weights`` is what the policy starts from."""
    order: str
    """``mask`` (masked-token likelihood, ``MaskDraw.masked``) or ``raster`` (exact sequence likelihood); both
    apply ``MaskDraw.drop_text``."""
    num_tokens: int
    """Image codes per image (set by ``load``)."""

    def load(self, device: torch.device) -> tuple[nn.Module, nn.Module]:
        """``(policy, reference)``: the module to train (its frozen parts ``requires_grad=False``) and a frozen one."""
        ...

    def encode(self, records: list[dict]) -> Pairs:
        """The pair file's records (``dpo.pairs.read_pairs``) as tensors, on the CPU."""
        ...

    def pair_logprobs(self, model: nn.Module, pairs: Pairs, draw: MaskDraw
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logp_chosen, logp_rejected, counts_chosen, counts_rejected)`` of ``model`` (policy or reference)."""
        ...

    def save(self, state: dict[str, torch.Tensor], out: Path) -> None:
        """Write the trained policy (``state``: its module's state dict) into ``out``, built aside and renamed in."""
        ...

    def is_saved(self, out: Path) -> bool:
        """``out`` holds a complete saved result."""
        ...


# -- shared pieces ---------------------------------------------------------------------------------
def encode_side(values: list, num_tokens: int, codebook_size: int,
                encode_images: Callable[[list[str]], torch.Tensor] | None, backend: str) -> torch.Tensor:
    """Codes ``long [P, N]`` of one side of the pairs: token lists as given, image paths through ``encode_images``."""
    codes = torch.empty(len(values), num_tokens, dtype=torch.long)
    paths = [i for i, v in enumerate(values) if isinstance(v, str)]
    if paths and encode_images is None:
        raise ValueError(f"pair {paths[0]}: {values[paths[0]]!r} is an image path, but the {backend} generator "
                         f"(generation/{backend}.py) has no image encoder to turn it into codes; write the pair file "
                         f"with image token lists ({num_tokens} codes each, the codes the generator sampled)")
    for i, v in enumerate(values):
        if not isinstance(v, str):
            if len(v) != num_tokens:
                raise ValueError(f"pair {i}: {len(v)} image tokens, the generator uses {num_tokens}")
            row = torch.tensor(v, dtype=torch.long)
            if row.min() < 0 or row.max() >= codebook_size:
                raise ValueError(f"pair {i}: image tokens must be codes in [0, {codebook_size}) for the {backend} "
                                 f"backend, got {row.min().item()}..{row.max().item()}")
            codes[i] = row
    for start in range(0, len(paths), 512):
        chunk = paths[start:start + 512]
        codes[chunk] = encode_images([values[i] for i in chunk])
    return codes


def encode_image_files(paths: list[str], size: int, encode: Callable[[torch.Tensor], torch.Tensor],
                       backend: str) -> torch.Tensor:
    """Codes ``long [P, N]`` (CPU) of the generator's own PNGs, ``size`` pixels square, through ``encode``."""
    images = load_images(paths)
    if tuple(images.shape[-2:]) != (size, size):
        raise ValueError(f"{paths[0]}: {tuple(images.shape[-2:])} pixels, the {backend} image tokenizer expects "
                         f"{size}x{size} (the generator's own outputs)")
    return encode(images).cpu()


def encode_records(records: list[dict], text: torch.Tensor | list[str], num_tokens: int, codebook_size: int,
                   encode_images: Callable[[list[str]], torch.Tensor] | None, backend: str) -> Pairs:
    return Pairs(text, *(encode_side([r[side] for r in records], num_tokens, codebook_size, encode_images, backend)
                         for side in ("chosen", "rejected")),
                 torch.tensor([float(r["weight"]) for r in records]))


class LikelihoodModule(nn.Module):
    """A generator's model with ``score(generator, *inputs)`` as ``forward`` (see the module docstring)."""

    def __init__(self, generator, score: Callable):
        super().__init__()
        self.model = generator.model  # the same module object the generator computes with
        self.generator = generator
        self.score = score

    def forward(self, *inputs):
        return self.score(self.generator, *inputs)


def frozen_reference(generator, weights: str, build: Callable[[str], object]):
    """The reference: a shallow copy of ``generator`` (tokenizers, VQ shared) with its own frozen model.

    Same weights as the policy: a deep copy of its model taken before training (no second load);
    other weights: the model of a generator built from them.
    """
    model = copy.deepcopy(generator.model) if weights == generator.cfg.weights else build(weights).model
    reference = copy.copy(generator)
    reference.model = model.requires_grad_(False).eval()
    return reference


def submodule_state(state: dict[str, torch.Tensor], prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The entries of ``state`` under ``prefix``, renamed without it, on the CPU and contiguous."""
    return {k.removeprefix(prefix): v.detach().cpu().contiguous() for k, v in state.items() if k.startswith(prefix)}


def fresh_folder(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def move_into(staged: Path, out: Path, marker: str) -> None:
    """Move every entry of ``staged`` into ``out`` (replacing), ``marker`` last: it marks a complete result."""
    names = sorted(p.name for p in staged.iterdir() if p.name != marker) + [marker]
    for name in names:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staged / name, target)
    staged.rmdir()


# -- tiny (the shapes world) -----------------------------------------------------------------------
class TinyBackend:
    """The shapes-world generator, as ``dpo.train`` trained it before the adapters existed."""

    def __init__(self, generation: GenerationConfig, reference: str):
        if generation.order not in TINY_SCORERS:
            raise ValueError(f"--order must be one of {sorted(TINY_SCORERS)}, got {generation.order!r}")
        for name, folder in (("init", Path(generation.weights)), ("reference", Path(reference))):
            if not (folder / "generator" / "config.json").is_file() or not (folder / "tokenizer").is_dir():
                raise ValueError(f"--{name} {folder} is not a generator weights folder (FOLDER/generator/config.json "
                                 "and FOLDER/tokenizer); pass e.g. weights/shapes or a finished DPO output")
        self.generation, self.order = generation, generation.order
        self.init, self.reference = Path(generation.weights), Path(reference)

    def load(self, device: torch.device) -> tuple[nn.Module, nn.Module]:
        from generation.tiny.model import TinyT2I
        from shapes.word_tokenizer import WordTokenizer
        from shapes.patch_tokenizer import PatchTokenizer

        self.text_tokenizer = WordTokenizer.load(self.init / "generator" / "text_vocab.json")
        self.tokenizer = PatchTokenizer.load(self.init / "tokenizer")
        policy = TinyT2I.load(self.init / "generator")
        reference = TinyT2I.load(self.reference / "generator").to(device).requires_grad_(False)
        self.model_cfg = policy.cfg
        self.num_tokens = policy.cfg.num_image_tokens
        return policy, reference

    def encode(self, records: list[dict]) -> Pairs:
        return encode_records(records, self.text_tokenizer.encode([r["prompt"] for r in records]), self.num_tokens,
                              self.model_cfg.codebook_size, lambda paths: self.tokenizer.encode(load_images(paths)),
                              "tiny")

    def pair_logprobs(self, model: nn.Module, pairs: Pairs, draw: MaskDraw):
        return pair_logprobs(TINY_SCORERS[self.order], model, pairs.text, pairs.chosen, pairs.rejected, draw,
                             pad_id=self.text_tokenizer.pad_id, cfg=self.model_cfg)

    def save(self, state: dict[str, torch.Tensor], out: Path) -> None:
        """``OUT/tokenizer`` (a copy of the init's) then ``OUT/generator``, each built aside and renamed in."""
        from generation.tiny.model import TinyT2I

        final = TinyT2I(self.model_cfg)
        final.load_state_dict(state)
        tokenizer_tmp, generator_tmp = out / "tokenizer.tmp", out / "generator.tmp"
        for tmp in (tokenizer_tmp, generator_tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(self.init / "tokenizer", tokenizer_tmp)
        shutil.rmtree(out / "tokenizer", ignore_errors=True)
        tokenizer_tmp.rename(out / "tokenizer")
        final.eval().save(generator_tmp)
        self.text_tokenizer.save(generator_tmp / "text_vocab.json")
        shutil.rmtree(out / "generator", ignore_errors=True)
        generator_tmp.rename(out / "generator")

    def is_saved(self, out: Path) -> bool:
        return (out / "generator" / "config.json").is_file()


# -- the real backends ----------------------------------------------------------------------------
class GeneratorBackend:
    """What the Show-o, Janus-Pro and LlamaGen adapters share: the generator built through its own loader
    from ``generation`` (``weights`` swapped), frozen parts, the reference, and the likelihood module.
    Subclasses name the generator class, what stays frozen, the token count, and how they save."""

    order = "raster"
    score = staticmethod(raster_backend_logprob)
    """The likelihood ``LikelihoodModule`` runs in ``forward``."""

    def __init__(self, generation: GenerationConfig, reference: str):
        self.generation, self.reference = generation, reference

    def generator_class(self) -> type:
        raise NotImplementedError

    def freeze(self, generator) -> None:
        """Turn off gradients of the parts DPO does not train."""

    def token_count(self, generator) -> int:
        return generator.grid ** 2

    def build(self, weights: str):
        return self.generator_class()(replace(self.generation, weights=weights), self.device)

    def load(self, device: torch.device) -> tuple[nn.Module, nn.Module]:
        self.device = device
        self.generator = self.build(self.generation.weights)
        self.freeze(self.generator)
        reference = frozen_reference(self.generator, self.reference, self.build)
        self.num_tokens = self.token_count(self.generator)
        return LikelihoodModule(self.generator, self.score), LikelihoodModule(reference, self.score)

    def pair_logprobs(self, model: nn.Module, pairs: Pairs, draw: MaskDraw):
        return raster_pair_logprobs(model, pairs, draw)

    def is_saved(self, out: Path) -> bool:
        return (out / "config.json").is_file()


# -- Show-o ----------------------------------------------------------------------------------------
def showo_score(generator, text: torch.Tensor, codes: torch.Tensor, masked: torch.Tensor,
                drop_text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return showo_masked_logprob(generator, text, codes, MaskDraw(masked, drop_text))


def call_module(module: nn.Module, text: torch.Tensor, codes: torch.Tensor, draw: MaskDraw):
    """``pair_logprobs``'s scorer for a ``LikelihoodModule`` of ``showo_score`` (tensors only cross ``forward``)."""
    return module(text, codes, draw.masked, draw.drop_text)


class ShowoBackend(GeneratorBackend):
    """Show-o's phi trained on the masked-token likelihood (upstream training/train_dpo.py trains the same)."""

    order = "mask"
    score = staticmethod(showo_score)

    def generator_class(self) -> type:
        from generation.showo import ShowoGenerator

        return ShowoGenerator

    def freeze(self, generator) -> None:
        generator.vq.requires_grad_(False)

    def token_count(self, generator) -> int:
        return generator.spec.num_vq_tokens

    def encode(self, records: list[dict]) -> Pairs:
        text = showo_text_ids(self.generator, [r["prompt"] for r in records]).cpu()
        return encode_records(records, text, self.num_tokens, self.generator.spec.codebook_size, self.encode_images,
                              "showo")

    def encode_images(self, paths: list[str]) -> torch.Tensor:
        """MAGVIT-v2 codes of the generator's own PNGs (``ShowoGenerator.encode``)."""
        return encode_image_files(paths, self.generator.image_size, self.generator.encode, "showo")

    def pair_logprobs(self, model: nn.Module, pairs: Pairs, draw: MaskDraw):
        return pair_logprobs(call_module, model, pairs.text, pairs.chosen, pairs.rejected, draw)

    def save(self, state: dict[str, torch.Tensor], out: Path) -> None:
        from safetensors.torch import save_file

        from generation.showo import HOW_TO_GET_WEIGHTS
        from generation.magvitv2 import resolve_checkpoint

        init = resolve_checkpoint(self.generation.weights, "Show-o weights", HOW_TO_GET_WEIGHTS)
        staged = fresh_folder(out / "weights.tmp")
        phi = submodule_state(state)
        save_file({f"showo.{k}": v for k, v in phi.items()}, str(staged / "pytorch_model.safetensors"))
        if (init / "llm").is_dir():
            shutil.copytree(init / "llm", staged / "llm")
        shutil.copy2(init / "config.json", staged / "config.json")
        move_into(staged, out, "config.json")


# -- Janus-Pro and LlamaGen ------------------------------------------------------------------------
def raster_pair_logprobs(model: nn.Module, pairs: Pairs, draw: MaskDraw):
    """Chosen and rejected in one forward of ``2B`` rows (``raster_backend_logprob`` through ``model``), both
    halves with the pair's text dropout."""
    logp, counts = model(pairs.text + pairs.text, torch.cat([pairs.chosen, pairs.rejected]), draw.drop_text.repeat(2))
    b = len(pairs.chosen)
    return logp[:b], logp[b:], counts[:b], counts[b:]


class JanusBackend(GeneratorBackend):
    """Janus-Pro's generation path (language model + image-generation embeddings, aligner, head)."""

    order = "raster"
    TRAINED = ("model.language_model", "model.generation_embeddings", "model.generation_aligner",
               "model.generation_head")
    """Everything else (SigLIP encoder, its aligner, the VQ, the text ``lm_head``) is unused by text-to-image and
    stays frozen; a ``lm_head`` tied to the text embeddings (transformers' default) trains with them."""

    def generator_class(self) -> type:
        from generation.janus import JanusGenerator

        return JanusGenerator

    def freeze(self, generator) -> None:
        model = generator.model.requires_grad_(False)
        for name in self.TRAINED:
            model.get_submodule(name).requires_grad_(True)

    def encode(self, records: list[dict]) -> Pairs:
        return encode_records(records, [r["prompt"] for r in records], self.num_tokens,
                              self.generator.model.config.vq_config.num_embeddings, self.encode_images, "janus")

    def encode_images(self, paths: list[str]) -> torch.Tensor:
        """VQ codes of the generator's own PNGs (``JanusGenerator.encode``)."""
        return encode_image_files(paths, self.generator.image_size, self.generator.encode, "janus")

    def save(self, state: dict[str, torch.Tensor], out: Path) -> None:
        """The init folder's tokenizer/processor files, then ``save_pretrained`` of the trained weights."""
        from generation.janus import weights_folder

        init = Path(weights_folder(self.generation.weights))
        staged = fresh_folder(out / "weights.tmp")
        for path in init.iterdir():
            if path.is_file() and not path.name.endswith(WEIGHT_SUFFIXES):
                shutil.copy2(path, staged / path.name)
        self.generator.model.save_pretrained(staged, state_dict=submodule_state(state))
        move_into(staged, out, "config.json")


class LlamaGenBackend(GeneratorBackend):
    """The LlamaGen GPT (caption projection, embeddings, blocks, head); T5 and the VQ stay frozen.
    T5 folder, image size, heads: ``generation.llamagen`` (``generation.config.LlamaGenOptions``)."""

    def generator_class(self) -> type:
        from generation.llamagen import LlamaGenGenerator

        return LlamaGenGenerator

    def freeze(self, generator) -> None:
        generator.text_encoder.requires_grad_(False)
        generator.vq.requires_grad_(False)

    def encode(self, records: list[dict]) -> Pairs:
        return encode_records(records, [r["prompt"] for r in records], self.num_tokens,
                              self.generator.model.cfg.vocab_size, None, "llamagen")

    def save(self, state: dict[str, torch.Tensor], out: Path) -> None:
        """``{"model": state_dict}`` with gpt.py's names, the entry ``generation.llamagen.load_gpt`` reads."""
        staged = out / f"{LLAMAGEN_FILE}.tmp"
        torch.save({"model": submodule_state(state)}, staged)
        os.replace(staged, out / LLAMAGEN_FILE)

    def is_saved(self, out: Path) -> bool:
        return (out / LLAMAGEN_FILE).is_file()


BACKENDS: dict[str, type] = {"tiny": TinyBackend, "showo": ShowoBackend, "janus": JanusBackend,
                             "llamagen": LlamaGenBackend}
