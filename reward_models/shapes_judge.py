"""Shapes-world judges: small image+text yes/no models behind the ``YesNoJudge`` protocol.

The paper's judges are a 7B VLM asked yes/no questions; here one small transformer reads
``[question kind] + prompt words + the image's 64 cell codes`` and answers yes or no from the
kind token's output, so the same search policies run on CPU. The image goes through the shipped
patch tokenizer (nearest codebook cell per 8x8 patch), which is exact on images the embedded
generator decodes. One checkpoint folder holds the model, its text vocabulary and a copy of the
tokenizer, so a judge loads from one path (``reward_checkpoints.<policy>``).

Train with ``python -m training.train_judges`` (see that module for the recipes).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from geneval.detection import COLORS
from shapes.world import SHAPES
from shapes.word_tokenizer import WordTokenizer
from shapes.patch_tokenizer import PatchTokenizer, unpatchify
from reward_models.judge import KINDS, JudgeConfig, Question, score_in_batches
from reward_models.verifiers import Reflection

CRITIQUES = ("ok", "missing-0", "missing-1", "color-0", "color-1", "position", "extra")
"""What a PARM++ shapes judge can say is wrong: the first failing clause of the prompt, in
GenEval's clause order (``training.judge_data.reflection_target`` derives it)."""

SCENE_CLASSES = (1 + len(SHAPES)) + (1 + len(COLORS))
"""Outputs of the scene head: shape classes then colour classes, each with background as class 0."""

CRITIQUE_TEXT = {
    "ok": "the image satisfies the prompt",
    "missing-0": "the first object the prompt names is missing or there are too few of it",
    "missing-1": "the second object the prompt names is missing",
    "color-0": "the first object the prompt names has the wrong colour",
    "color-1": "the second object the prompt names has the wrong colour",
    "position": "the objects do not stand in the position the prompt asks for",
    "extra": "there are more objects than the prompt asks for",
}


@dataclass
class JudgeNetConfig:
    text_vocab_size: int = 35
    max_text_len: int = 12
    codebook_size: int = 1291
    num_image_tokens: int = 64
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    """Question kinds the model has an embedding for, in id order."""
    reflection: bool = False
    """PARM++ heads: a critique class (``CRITIQUES``) and a per-token "regenerate" logit."""
    scene_head: bool = False
    """Training aid of the zero-shot recipe: a per-image-token head that names the shape and the
    colour of the object covering the token (``training.train_judges.scene_targets``), the analogue
    of the grounding data a VLM is pretrained on. Unused when judging."""
    patch_pixels: int = 0
    """When > 0, every image code is also embedded from its codebook patch (``patch_pixels`` pixel
    values, a buffer filled by ``set_patches``) through a linear map, so the colours and shape
    fragments of the codes are known from the first step instead of learned one code at a time."""
    pixel_stem: int = 0
    """When > 0, a convolutional stem with this many channels reads the picture of the codes (the
    codebook patches pasted back into an image, exactly the image for the generator's outputs) and
    adds one feature per cell to the image tokens. Unlike the per-code embeddings it sees across
    cell borders, where a malformed shape shows (a blob spilling into the next cell, a broken edge).
    Needs ``patch_pixels``; the stem halves the resolution once per factor of 2 of the patch side."""


def patch_side(cfg: JudgeNetConfig) -> int:
    side = math.isqrt(cfg.patch_pixels // 3)
    if not cfg.patch_pixels or 3 * side * side != cfg.patch_pixels or side & (side - 1):
        raise ValueError(f"pixel_stem needs RGB patches with a power-of-2 side, got patch_pixels={cfg.patch_pixels}")
    return side


def pixel_stem(cfg: JudgeNetConfig) -> nn.Sequential:
    """3x3 convolutions over the picture (values in [-1, 1]), one stride-2 step per halving of the patch
    side, so a ``g x g``-cell picture comes out as ``g x g`` features of ``hidden_size``, raster order as
    the codes (``shapes.patch_tokenizer.patchify``)."""
    c, layers = cfg.pixel_stem, [nn.Conv2d(3, cfg.pixel_stem, 3, padding=1), nn.GELU()]
    halvings = patch_side(cfg).bit_length() - 1
    for i in range(halvings):
        out = cfg.hidden_size if i == halvings - 1 else min(2 * c, 4 * cfg.pixel_stem)
        layers += [nn.Conv2d(c, out, 3, stride=2, padding=1)] + ([nn.GELU()] if i < halvings - 1 else [])
        c = out
    return nn.Sequential(*layers)


class JudgeNet(nn.Module):
    def __init__(self, cfg: JudgeNetConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.kind_embed = nn.Embedding(len(cfg.kinds), d)
        self.text_embed = nn.Embedding(cfg.text_vocab_size, d)
        self.image_embed = nn.Embedding(cfg.codebook_size, d)
        if cfg.patch_pixels:
            self.register_buffer("patches", torch.zeros(cfg.codebook_size, cfg.patch_pixels))
            self.patch_embed = nn.Linear(cfg.patch_pixels, d)
        if cfg.pixel_stem:
            self.stem = pixel_stem(cfg)
        self.pos_embed = nn.Parameter(torch.randn(1 + cfg.max_text_len + cfg.num_image_tokens, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, cfg.num_heads, 4 * d, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.answer = nn.Linear(d, 2)
        """Logits of (yes, no) read at the kind token."""
        if cfg.reflection:
            self.critique = nn.Linear(d, len(CRITIQUES))
            """Critique logits, read at the kind token."""
            self.region = nn.Linear(d, 1)
            """"Regenerate this token" logit, read at each image position."""
        if cfg.scene_head:
            self.scene = nn.Linear(d, SCENE_CLASSES)
            """Per image token: shape logits (background first) then colour logits (background first)."""

    def set_patches(self, codebook: torch.Tensor) -> None:
        """Fill the patch buffer from a tokenizer codebook (``[K, pixels]``, values 0-255)."""
        self.patches.copy_(codebook / 127.5 - 1.0)

    def embed_image(self, codes: torch.Tensor) -> torch.Tensor:
        image = self.image_embed(codes)
        if self.cfg.patch_pixels:
            image = image + self.patch_embed(self.patches[codes])
        if self.cfg.pixel_stem:
            picture = unpatchify(self.patches[codes], patch_side(self.cfg))
            image = image + self.stem(picture).flatten(2).transpose(1, 2)  # [B, d, g, g] -> raster tokens
        return image

    def hidden(self, kinds: torch.Tensor, text: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.kind_embed(kinds)[:, None], self.text_embed(text), self.embed_image(codes)], 1)
        return self.norm(self.encoder(x + self.pos_embed))

    def forward(self, kinds: torch.Tensor, text: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """``(kinds [B], text [B, T], codes [B, N])`` -> answer logits ``[B, 2]`` (yes, no)."""
        return self.answer(self.hidden(kinds, text, codes)[:, 0])

    def answer_and_scene(self, kinds: torch.Tensor, text: torch.Tensor, codes: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Answer logits ``[B, 2]`` and scene logits ``[B, N, SCENE_CLASSES]`` (zero-shot training)."""
        h = self.hidden(kinds, text, codes)
        return self.answer(h[:, 0]), self.scene(h[:, -codes.shape[1]:])

    def reflect(self, kinds: torch.Tensor, text: torch.Tensor, codes: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Answer logits ``[B, 2]``, critique logits ``[B, C]``, region logits ``[B, N]``."""
        h = self.hidden(kinds, text, codes)
        return self.answer(h[:, 0]), self.critique(h[:, 0]), self.region(h[:, -codes.shape[1]:]).squeeze(-1)


class ShapesJudge:
    """``YesNoJudge`` for the shapes world: ``P(yes), P(no)`` = softmax of the two answer logits."""

    def __init__(self, cfg: JudgeConfig, device: torch.device | str = "cpu"):
        folder = Path(cfg.checkpoint)
        if not (folder / "config.json").is_file():
            raise ValueError(f"no shapes judge at {folder}; train it with `python -m training.train_judges` "
                             "or point reward_checkpoints at a trained folder")
        self.device = torch.device(device)
        self.batch_size = cfg.batch_size
        self.model, self.text, self.tokenizer = load_judge(folder)
        self.model.to(self.device)
        self.tokenizer.to(self.device)
        self._reads_codes: dict = {}

    @torch.inference_mode()
    def yes_no_probs(self, images: torch.Tensor, questions: list[Question]) -> tuple[torch.Tensor, torch.Tensor]:
        unknown = sorted({q.kind for q in questions} - set(self.model.cfg.kinds))
        if unknown:
            raise ValueError(f"this shapes judge was trained for {self.model.cfg.kinds}, not {unknown}")
        return score_in_batches(self._score, images, questions, self.batch_size)

    @torch.inference_mode()
    def yes_no_probs_of_codes(self, codes: torch.Tensor, questions: list[Question]
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """``yes_no_probs`` of the pictures of ``codes`` (``long [B, N]``) when ``reads_codes`` holds for
        their decoder: the same chunks, the same numbers, without the pixel round trip."""
        if len(codes) != len(questions):
            raise ValueError(f"one question per code row: got {len(questions)} questions for {len(codes)} rows")
        step = max(self.batch_size, 1)
        parts = [self._score_codes(codes[start:start + step].to(self.device), questions[start:start + step])
                 for start in range(0, len(questions), step)]
        return torch.cat([yes for yes, _ in parts]), torch.cat([no for _, no in parts])

    def reads_codes(self, decode) -> bool:
        """Whether this judge's tokenizer reads ``decode(c)`` back as ``c`` for every code of its codebook.

        Encoding and decoding act patch by patch, so checking each code once settles every image.
        The answer is kept per decoder.
        """
        known = self._reads_codes.get(decode)
        if known is None:
            size = self.tokenizer.cfg.codebook_size
            per_image = self.tokenizer.cfg.num_tokens
            codes = torch.arange(-(-size // per_image) * per_image, device=self.device) % size
            codes = codes.view(-1, per_image)
            try:
                pictures = decode(codes)
                known = (pictures.dtype == torch.uint8 and tuple(pictures.shape[1:]) ==
                         (3, self.tokenizer.cfg.image_size, self.tokenizer.cfg.image_size)
                         and torch.equal(self.tokenizer.encode(pictures.to(self.device)), codes))
            except (IndexError, RuntimeError):  # another codebook: a code out of its range
                known = False
            self._reads_codes[decode] = known
        return known

    @property
    def can_reflect(self) -> bool:
        return self.model.cfg.reflection

    @torch.inference_mode()
    def reflect(self, images: torch.Tensor, prompts: list[str]) -> list[Reflection]:
        """PARM++ reflection: the critique class as text and the tokens whose logit says "regenerate".

        Asked with the ORM kind (the reflection verdict is the ORM question, ``verifiers.REFLECT_KIND``).
        """
        if not self.can_reflect:
            raise ValueError("this shapes judge has no reflection heads; train it with --recipe parm++")
        kinds = torch.full((len(prompts),), self.model.cfg.kinds.index("orm"), device=self.device)
        text = self.text.encode(prompts).to(self.device)
        _, critique, region = self.model.reflect(kinds, text, self.tokenizer.encode(images.to(self.device)))
        return [Reflection(CRITIQUE_TEXT[CRITIQUES[int(c)]], (r > 0).cpu())
                for c, r in zip(critique.argmax(-1), region)]

    def _score(self, images: torch.Tensor, questions: list[Question]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._score_codes(self.tokenizer.encode(images.to(self.device)), questions)

    def _score_codes(self, codes: torch.Tensor, questions: list[Question]) -> tuple[torch.Tensor, torch.Tensor]:
        unknown = sorted({q.kind for q in questions} - set(self.model.cfg.kinds))
        if unknown:
            raise ValueError(f"this shapes judge was trained for {self.model.cfg.kinds}, not {unknown}")
        kinds = torch.tensor([self.model.cfg.kinds.index(q.kind) for q in questions], device=self.device)
        text = self.text.encode([q.prompt for q in questions]).to(self.device)
        probs = self.model(kinds, text, codes).float().softmax(-1).cpu()
        return probs[:, 0], probs[:, 1]


def save_judge(folder: str | Path, model: JudgeNet, text: WordTokenizer, tokenizer: PatchTokenizer,
               log: dict | None = None) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    text.save(folder / "text_vocab.json")
    tokenizer.save(folder / "tokenizer")
    if log is not None:
        (folder / "train_log.json").write_text(json.dumps(log, indent=1) + "\n")
    (folder / "config.json").write_text(json.dumps(asdict(model.cfg), indent=2) + "\n")  # last: marks it complete


def load_judge(folder: str | Path) -> tuple[JudgeNet, WordTokenizer, PatchTokenizer]:
    folder = Path(folder)
    model = JudgeNet(JudgeNetConfig(**json.loads((folder / "config.json").read_text())))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval(), WordTokenizer.load(folder / "text_vocab.json"), PatchTokenizer.load(folder / "tokenizer")
