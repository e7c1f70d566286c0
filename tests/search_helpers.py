"""Shared pieces of the search-policy tests (test_search.py, test_scaling_policies.py,
test_batch_invariance.py): the tiny generator, the fake judges, and counts computed by hand."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from config import Config, SearchConfig
from generation.base import seeded_generator
from generation.config import GenerationConfig
from generation.tiny.backend import TinyGenerator
from search import ImageRequest

SEED = 0
STEPS = 4
REQUESTS = [ImageRequest("a photo of a red circle", 0, 0), ImageRequest("a photo of two stars", 3, 1)]


def make_generator(weights: Path, order: str) -> TinyGenerator:
    # Raster: 2 token rows per step, so both orders take STEPS = 4 steps over the 8x8 grid.
    return TinyGenerator(GenerationConfig(backend="tiny", weights=str(weights), order=order, num_steps=STEPS,
                                          rows_per_step=2, guidance_scale=2.0))


def policy_args(num_candidates: int, **search) -> dict:
    """The search settings and N a policy is built with, beside its judge."""
    return {"search": SearchConfig(**search), "num_candidates": num_candidates}


def make_config(num_candidates: int, **search) -> Config:
    cfg = Config()
    cfg.run.search_num = num_candidates
    cfg.search = SearchConfig(**search)
    return cfg


def brightness(images: torch.Tensor) -> torch.Tensor:
    return images.float().mean((1, 2, 3)) / 255


class BrightnessJudge:
    """Every question: P(yes) = mean brightness, P(no) = 1 - P(yes). Records what it was asked."""

    def __init__(self, cfg=None, device="cpu"):
        self.checkpoint = None if cfg is None else cfg.checkpoint
        self.asked: list[tuple[str, torch.Tensor]] = []

    def yes_no_probs(self, images, questions):
        assert images.dtype == torch.uint8 and len(questions) == len(images)
        self.asked += [(q.kind, image) for q, image in zip(questions, images)]
        p_yes = brightness(images)
        return p_yes, 1 - p_yes


class TableJudge:
    """Answers ``rule(kind, request, candidate, step)`` for an image of plain decoding's table."""

    def __init__(self, table: dict[bytes, tuple[int, int, int]], rule):
        self.table, self.rule = table, rule
        self.asked = Counter()

    def yes_no_probs(self, images, questions):
        answers = []
        for image, question in zip(images, questions):
            request, candidate, step = self.table[image.numpy().tobytes()]
            self.asked[question.kind] += 1
            answers.append(self.rule(question.kind, request, candidate, step))
        p_yes, p_no = zip(*answers)
        return torch.tensor(p_yes), torch.tensor(p_no)


def plain_paths(generator, requests, num_candidates):
    """Plain decoding of every candidate: ``{preview bytes: (request, candidate, step)}`` and finals
    ``[R, N, 3, H, W]`` (the preview after the last step is the final image)."""
    prompts = [r.prompt for r in requests for _ in range(num_candidates)]
    streams = [seeded_generator(SEED, r.prompt_index, r.sample_index, c)
               for r in requests for c in range(num_candidates)]
    canvas, table = generator.start(prompts, streams), {}
    while canvas.step_index < generator.num_steps:
        canvas = generator.step(canvas)
        for row, image in enumerate(generator.preview(canvas)):
            key = image.numpy().tobytes()
            assert key not in table, "two previews coincide; the table could not tell them apart"
            table[key] = (row // num_candidates, row % num_candidates, canvas.step_index)
    finals = generator.finish(canvas)
    return table, finals.view(len(requests), num_candidates, *finals.shape[1:])


def parm_rule(clear_at: dict, potential: dict, final: dict):
    """Clarity yes from step ``clear_at[c]`` on (never if None); fixed potential and final answers."""
    def rule(kind, request, candidate, step):
        if kind == "clarity":
            clear = clear_at[candidate] is not None and step >= clear_at[candidate]
            return (0.9, 0.1) if clear else (0.1, 0.9)
        if kind == "potential":
            return potential[candidate]
        assert kind == "orm" and step == STEPS, "only final images get the ORM question"
        return final[candidate], 1 - final[candidate]  # KeyError: a non-survivor was judged
    return rule


def forwards(selection) -> list:
    return [r.generator_forwards for r in selection.candidates]


def row_forwards(order: str, steps: int) -> int:
    """Forwards of one row after ``steps`` steps: one per mask step; raster: the prefill, then one per
    code fed back (16 per step of 2 rows, none after the very last code)."""
    return steps if order == "mask" else 1 + 16 * steps - (steps == STEPS)


def calls(selection) -> list:
    return [r.judge_calls for r in selection.candidates]
