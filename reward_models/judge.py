"""The one judging primitive: P("yes") and P("no") for (image, question) pairs.

Every verifier of the paper (ORM, PRM, PARM clarity and potential; paper sections 3.2 and 4) asks a
generative VLM a yes/no question about one image and reads the probability of the answer token.
Search policies see only ``YesNoJudge``; the backends (``reward_models.llava_onevision``,
``reward_models.qwen_vl``, shapes-world judges) implement it. This module also holds the pieces
every transformers backend shares: checkpoint lookup without downloads, the answer-token ids,
left padding and the read-out of the last position.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from hub import local_snapshot

KINDS = ("orm", "prm", "clarity", "potential")
"""Question kinds; ``reward_models.questions.dialogue`` turns each into chat turns."""


@dataclass(frozen=True)
class Question:
    kind: str
    """One of ``KINDS``."""
    prompt: str
    """The text-to-image prompt the image was generated from."""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown question kind {self.kind!r}; valid: {KINDS}")


class YesNoJudge(Protocol):
    def yes_no_probs(self, images: torch.Tensor, questions: list[Question]) -> tuple[torch.Tensor, torch.Tensor]:
        """``images`` ``uint8 [B, 3, H, W]``, ``questions[i]`` about ``images[i]``.

        Returns ``(p_yes, p_no)``, float ``[B]`` on the CPU: the next-token probabilities of the
        answer tokens after the chat's generation prompt (so ``p_yes + p_no <= 1``).
        """
        ...


@dataclass
class JudgeConfig:
    """The ``reward:`` section of the run config."""

    backend: str = "llava_onevision"
    """A key of ``reward_models.JUDGES``: ``llava_onevision``, ``qwen2_vl`` or ``qwen2_5_vl``."""
    checkpoint: str = "llava-hf/llava-onevision-qwen2-7b-ov-hf"
    """A local folder in transformers layout or a Hugging Face id already in the local cache. The
    default is the official conversion of the paper's zero-shot judge lmms-lab/llava-onevision-qwen2-7b-ov;
    the fine-tuned ORM/PARM need ``scripts/convert_llava_next_reward.py`` first."""
    dtype: str = "float16"
    """``float32`` | ``bfloat16`` | ``float16`` (upstream loads the judges in float16,
    llava/model/builder.py:27)."""
    device: str = "auto"
    """``auto``: the generator's device; otherwise a device name (``cpu``, ``cuda:1``)."""
    batch_size: int = 8
    """(image, question) pairs per forward pass; does not change the probabilities."""
    image_mode: str = "pad"
    """LLaVA-OneVision only. ``pad``: upstream inference (pad to square, one base crop plus
    image_newline, selector.py:20). ``anyres``: transformers' anyres_max_9 tiling, as in training."""
    fold_case: bool = False
    """Also count "Yes"/"No". Off: upstream reads only the lowercase tokens (selector.py:56-57)."""


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"reward.dtype={name!r} is not one of {sorted(DTYPES)}")
    return DTYPES[name]


def checkpoint_folder(name_or_path: str, hint: str) -> str:
    """The local folder for ``name_or_path``: the folder itself or its snapshot in the HF cache.

    Nothing is downloaded. ``hint`` is appended to the error (e.g. how to convert a checkpoint).
    """
    return local_snapshot(name_or_path, lambda invalid, cache: FileNotFoundError(
        f"reward.checkpoint={name_or_path!r} is neither a local folder nor a model in the Hugging Face "
        f"cache ({cache}). Reward models are never downloaded at run time; on a machine "
        f"with internet access run `hf download {name_or_path}` into that cache (set HF_HOME to move it) "
        f"or `hf download {name_or_path} --local-dir DIR` and set reward.checkpoint=DIR. {hint}"))


def answer_token_ids(tokenizer, fold_case: bool) -> tuple[list[int], list[int]]:
    """Vocabulary ids read as "yes" and as "no".

    Upstream scores ``convert_tokens_to_ids("yes")`` (selector.py:56), the lowercase token with no
    leading space, which is what follows ``<|im_start|>assistant\\n``.
    """
    words = (["yes", "Yes"], ["no", "No"]) if fold_case else (["yes"], ["no"])
    ids = []
    for group in words:
        group_ids = []
        for word in group:
            token_id = tokenizer.convert_tokens_to_ids(word)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise ValueError(f"the judge's tokenizer has no single token {word!r}; it cannot score yes/no "
                                 "answers (is reward.checkpoint a chat VLM?)")
            group_ids.append(token_id)
        ids.append(group_ids)
    return ids[0], ids[1]


def check_batch(images: torch.Tensor, questions: list[Question]) -> None:
    """``ValueError`` unless ``images`` is ``uint8 [B, 3, H, W]`` with one question per image."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"judge images must be uint8 [B, 3, H, W], got {images.dtype} {tuple(images.shape)}")
    if len(questions) != images.shape[0]:
        raise ValueError(f"one question per image: got {len(questions)} questions for {images.shape[0]} images")


def score_in_batches(score, images: torch.Tensor, questions: list[Question], batch_size: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``yes_no_probs`` of a judge whose ``score(images, questions) -> (p_yes, p_no)`` takes one batch.

    Chunks of ``batch_size`` pairs bound memory; the probabilities do not depend on the chunking.
    """
    check_batch(images, questions)
    step = max(batch_size, 1)
    parts = [score(images[start:start + step], questions[start:start + step])
             for start in range(0, len(questions), step)]
    return torch.cat([yes for yes, _ in parts]), torch.cat([no for _, no in parts])


def to_pil_images(images: torch.Tensor) -> list:
    """``uint8 [B, 3, H, W]`` as a list of RGB PIL images (what transformers' image processors take)."""
    from PIL import Image

    return [Image.fromarray(image.permute(1, 2, 0).cpu().numpy()) for image in images]


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both ``long [B, L]``, padded on the left.

    Left padding puts every row's last real token at position ``L - 1``, the one scored.
    """
    length = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, length - len(seq):] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, length - len(seq):] = 1
    return input_ids, attention_mask


def yes_no_from_logits(last_logits: torch.Tensor, yes_ids: list[int], no_ids: list[int]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the full vocabulary of ``last_logits`` ``[B, V]``, summed over each answer's ids.

    Upstream takes the softmax of the first generated token's *processed* scores at temperature 1
    (selector.py:81-84), after transformers' sampling warpers (top-k 50 by default) have dropped
    all but the likeliest tokens; there is no sampling here, so no warper and no renormalisation.
    """
    probs = torch.softmax(last_logits.float(), dim=-1)
    return probs[:, yes_ids].sum(-1).cpu(), probs[:, no_ids].sum(-1).cpu()
