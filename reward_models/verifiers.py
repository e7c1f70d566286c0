"""How each search policy asks its judge: which question, and how an answer becomes a decision.

``search.py`` drives the generator; everything it asks a reward model goes through here, on top
of the one primitive ``YesNoJudge.yes_no_probs`` (``reward_models/judge.py``):

- ORM best-of-N: the ``orm`` question on final images; the score is P("yes") (paper section 3.2).
- PRM: the ``prm`` question on intermediate previews; the score is P("yes").
- PARM: ``clarity`` on previews, ``potential`` (the 2-turn dialogue) once at the first clear
  step, and the ``orm`` question asked of the PARM checkpoint on the survivors' finals
  (upstream parm.py calls ``selector.orm`` with the PARM model).
- PARM++: a reflection verdict (the ``orm`` question: "does this image accurately represent the
  prompt?"; ``judge.KINDS`` has no dedicated reflection kind) and, on "no", a critique and a
  region from the judge's optional ``reflect`` method (``ReflectiveJudge``).

Decisions are the paper's yes/no answers: by default the likelier of the two answer tokens; with
``search.sampled_decisions`` the first token sampled at temperature 1 as upstream does
(selector.py ``generate(do_sample=True, temperature=1.)``), which can also be neither word.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from reward_models.judge import JudgeConfig, Question, YesNoJudge

YES, NO, OTHER = "yes", "no", "other"
"""A decision: the answer word, or ``other`` when a sampled first token is neither word."""

NEVER_CLEAR_P_NO = 1.0
"""PARM fallback score of a path whose clarity never said yes: upstream's initial
``no_prob_list = [1.] * search_num`` (parm.py), never overwritten for such a path."""

OTHER_ANSWER_P_NO = 50.0
"""PARM fallback score of a potential answer that is neither yes nor no: upstream's sentinel
(selector.py ``potential_assessment`` returns ``False, 50.``), so such a path is the last resort."""

REFLECT_KIND = "orm"
"""Question kind of the PARM++ reflection verdict (yes = the image satisfies the prompt)."""


@dataclass
class Reflection:
    """A judge's account of why an image misses its prompt (PARM++, paper section 5 and Fig. 9)."""

    text: str
    """The critique, e.g. "there are three stars, the prompt asks for two"."""
    token_mask: torch.Tensor
    """``bool [N]``: the image tokens to regenerate, row-major over the generator's token grid
    (``canvas.tokens.shape[1]`` positions). All False means the critique names no region: the
    whole image is regenerated."""


class ReflectiveJudge(YesNoJudge, Protocol):
    """A judge that can also say what is wrong with an image and where (needed by ``parm++``)."""

    def reflect(self, images: torch.Tensor, prompts: list[str]) -> list[Reflection]:
        """``images`` ``uint8 [B, 3, H, W]``; one ``Reflection`` per image about ``prompts[i]``."""
        ...


def is_reflective(judge: YesNoJudge) -> bool:
    """Whether ``judge`` can reflect; a judge class whose instances may lack the ability says so in
    ``can_reflect`` (a shapes judge trained without reflection heads)."""
    return callable(getattr(judge, "reflect", None)) and bool(getattr(judge, "can_reflect", True))


def judge_config(reward: JudgeConfig, checkpoints: dict[str, str], policy: str) -> JudgeConfig:
    """``reward`` with the checkpoint of ``policy`` from the preset's ``reward_checkpoints`` map."""
    if policy not in checkpoints:
        raise ValueError(f"--reward_model {policy} needs a judge checkpoint but the preset has no "
                         f"reward_checkpoints entry {policy!r} (it has: {sorted(checkpoints) or 'none'}); add "
                         f"\"reward_checkpoints: {{{policy}: FOLDER_OR_HF_ID}}\" to the YAML preset or pass "
                         f"reward_checkpoints.{policy}=FOLDER_OR_HF_ID")
    return dataclasses.replace(reward, checkpoint=checkpoints[policy])


# ----------------------------------------------------------------------------
# Pictures a judge may read as codes

@dataclass
class CodedImages:
    """Pictures held as the generator's codes and its ``decode`` (``long [B, N]`` -> ``uint8 [B, 3, H, W]``).

    Search policies pass previews this way when the backend has their codes: a judge that reads
    every code's picture back as that code (``CodeReadingJudge``) then takes the codes as they are
    instead of re-tokenising pixels; any other judge gets ``pixels()``. The answers are the same.
    """

    codes: torch.Tensor
    decode: Callable[[torch.Tensor], torch.Tensor]

    def __getitem__(self, index) -> "CodedImages":
        return CodedImages(self.codes[index], self.decode)

    def __len__(self) -> int:
        return len(self.codes)

    def pixels(self) -> torch.Tensor:
        return self.decode(self.codes)


class CodeReadingJudge(YesNoJudge, Protocol):
    """A judge that tokenises images into codes before reading them (the shapes judges)."""

    def reads_codes(self, decode: Callable[[torch.Tensor], torch.Tensor]) -> bool:
        """Whether the judge reads ``decode(c)`` back as ``c`` for every code ``c``, so that
        ``yes_no_probs_of_codes(c, q) == yes_no_probs(decode(c), q)``."""
        ...

    def yes_no_probs_of_codes(self, codes: torch.Tensor, questions: list[Question]
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        ...


def reads_codes(judge: YesNoJudge, decode: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    method = getattr(judge, "reads_codes", None)
    return callable(method) and callable(getattr(judge, "yes_no_probs_of_codes", None)) and bool(method(decode))


# ----------------------------------------------------------------------------
# Questions

def ask(judge: YesNoJudge, kind: str, images: torch.Tensor | CodedImages, prompts: list[str]
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(p_yes, p_no)``, float ``[B]``, of question ``kind`` about ``images[i]`` and ``prompts[i]``."""
    if not prompts:
        return torch.zeros(0), torch.zeros(0)
    questions = [Question(kind, prompt) for prompt in prompts]
    if isinstance(images, CodedImages):
        if reads_codes(judge, images.decode):
            p_yes, p_no = judge.yes_no_probs_of_codes(images.codes, questions)
            return p_yes.float().cpu(), p_no.float().cpu()
        images = images.pixels()
    p_yes, p_no = judge.yes_no_probs(images, questions)
    return p_yes.float().cpu(), p_no.float().cpu()


def orm_scores(judge: YesNoJudge, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """Outcome reward of final images: P("yes") to the ORM question (paper section 3.2)."""
    return ask(judge, "orm", images, prompts)[0]


def prm_scores(judge: YesNoJudge, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """Process reward of intermediate previews: P("yes") to the PRM question (paper section 3.2)."""
    return ask(judge, "prm", images, prompts)[0]


def clarity(judge: YesNoJudge, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """PARM stage 1: is the preview clear enough to judge its potential? (selector.py clarity_judgement)"""
    return ask(judge, "clarity", images, prompts)


def potential(judge: YesNoJudge, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """PARM stage 2, once per path: can it still become a faithful image? (selector.py potential_assessment)"""
    return ask(judge, "potential", images, prompts)


def reflection_verdict(judge: YesNoJudge, images: torch.Tensor, prompts: list[str]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """PARM++ reflection evaluation: does the image satisfy the prompt?"""
    return ask(judge, REFLECT_KIND, images, prompts)


def reflect(judge: YesNoJudge, images: torch.Tensor, prompts: list[str], num_tokens: int) -> list[Reflection]:
    """The judge's critique and region of each image; ``ValueError`` on a malformed answer."""
    if not prompts:
        return []
    reflections = judge.reflect(images, prompts)
    if len(reflections) != len(prompts):
        raise ValueError(f"judge.reflect returned {len(reflections)} reflections for {len(prompts)} images")
    for reflection in reflections:
        mask = reflection.token_mask
        if mask.dtype != torch.bool or tuple(mask.shape) != (num_tokens,):
            raise ValueError(f"Reflection.token_mask must be bool [{num_tokens}] (one flag per image token), "
                             f"got {mask.dtype} {tuple(mask.shape)}")
    return reflections


# ----------------------------------------------------------------------------
# Decisions

def argmax_answer(p_yes: float, p_no: float) -> str:
    """The likelier answer word; a tie is "no" (nothing argues for yes)."""
    return YES if p_yes > p_no else NO


def sampled_answer(p_yes: float, p_no: float, generator: torch.Generator) -> str:
    """Upstream's sampled first token: yes with P(yes), no with P(no), ``other`` with the rest."""
    draw = torch.rand((), generator=generator).item()
    if draw < p_yes:
        return YES
    return NO if draw < p_yes + p_no else OTHER


def is_clear(answer: str) -> bool:
    """Clarity passes unless the answer is "no": upstream tests ``clarity_judgement(...) == 'no'``
    (selector.py ``parm``), so a sampled token that is neither word counts as clear."""
    return answer != NO


def has_potential(answer: str) -> bool:
    """Potential passes only on "yes" (selector.py ``'yes' in cur_reponse``)."""
    return answer == YES


def fallback_p_no(clear_step: int | None, answer: str | None, p_no: float | None) -> float:
    """What PARM's fallback minimises when no path survives (paper section 4; upstream parm.py)."""
    if clear_step is None:
        return NEVER_CLEAR_P_NO
    if answer == OTHER:
        return OTHER_ANSWER_P_NO
    assert p_no is not None, "a clear path has a potential answer"
    return p_no
