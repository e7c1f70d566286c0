"""Test-time scaling policies from after the paper, on the protocol and cost axis of ``search.py``.

Each policy drives any backend through ``generation.base.Generator`` exactly as the policies of
``search.py`` do: rows ``c = 0..N-1`` of an image start from ``seeded_generator(seed, p, s, c)``, a
row that takes another row's state draws from ``branch_generator(seed, p, s, c, step, stream)``, all
N rows of all requests of a call are rows of one canvas, and every candidate record counts its
``generator_forwards`` and ``judge_calls`` (``search.Candidates``). So images do not depend on
batching or on the number of ranks, and ``main.py`` resumes them like any other policy.
``main.py`` finds them in ``policies.POLICIES`` (``--reward_model NAME``); like the paper's policies they
are built as ``cls(judge, search settings, N)``.

Two things of the generator these policies use beyond plain decoding (``generation/base.py``):
``Generator.lookahead(canvas)``, the image each row completes to (mask order: the model's full
guess, free; raster order: greedy decoding of the remaining codes, whose forwards are counted),
and ``Canvas.token_stats``, per row sums of the normalised entropy, top-2 margin and guidance gap
of the tokens decided so far (``generation.base.decision_stats``).

Policies (N = ``run.search_num``; T = the backend's ``num_steps``; judges are the preset's
``reward_checkpoints[NAME]``, asked the ORM question):

- ``progressive``: block-wise beam search with anchors (GridAR, arXiv 2511.21185, which searches
  block by block over the canvas and keeps the best partial canvases as anchors). Defined as:
  1. Decoding is cut into ``search.blocks`` = B blocks; block ``b`` ends after step
     ``floor(b * T / B)``, ``b = 1..B-1`` (``block_ends``). B <= T.
  2. All N rows decode a block. At its end every row's lookahead image gets the ORM question
     (FR-TTS's point: judge the completion, not the blurry partial decode), and the
     ``k = min(search.anchors, N)`` rows with the highest P(yes) become the anchors (ties: the
     lowest candidate index).
  3. Each anchor row continues its own path. The other rows, in candidate order, take the states
     of the anchors in turn (best anchor first: non-anchor row ``i`` copies anchor ``i mod k``)
     and draw from ``branch_generator(seed, p, s, c, step, "progressive")``, so the N rows of the
     next block are the anchors and ``N - k`` fresh continuations of them.
  4. After the last step the ORM question scores the N finals and the highest P(yes) is kept.
  The trace of slot ``c``: the judged steps, its lookahead score at each, whether it was an
  anchor, and the candidate whose state it took (``source``).
- ``lookahead``: FR-TTS (arXiv 2512.00438) prefix search: the same search with beam width 1 and a
  decision after every ``search.lookahead_every``-th step ``k < T`` instead of at block ends, i.e.
  ``prm``'s greedy step search with the ORM question on each row's lookahead image in place of
  the PRM question on its preview.
- ``confidence``: ScalingAR (arXiv 2509.26376) without a verifier. A path's confidence after step
  ``k`` is ``-w_e * H + w_m * M + w_g * G`` over the tokens it has decided so far, with ``H`` the
  mean entropy of the guided distribution divided by ``log K``, ``M`` the mean top-2 margin, ``G``
  the mean guidance gap ``log p_cond(code) - log p_uncond(code)`` and ``(w_e, w_m, w_g) =
  search.confidence_weights``. At each block end (as ``progressive``), each image keeps the
  ``ceil(search.confidence_keep * R)`` of its R running paths with the highest confidence (ties:
  the lowest candidate index); the others stop and leave the canvas. Among the paths that reach
  the end, the highest final confidence is kept. ScalingAR's guidance-scale schedule is not
  reproduced: the backends guide with one fixed scale.
  The confidences come from the generator's logits, computed for all requests' rows in one forward,
  so across batch sizes or thread counts they agree to float rounding (about 1e-7 relative), not
  bit for bit; only paths tied to that precision can be pruned differently.
- ``confidence_orm``: the same early stopping, then best-of-N' among the survivors by the ORM
  question (the judge ``reward_checkpoints.confidence_orm``), as PARM's final selection.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

import search
from config import SearchConfig
from generation.base import Generator
from reward_models import verifiers
from reward_models.judge import YesNoJudge


def block_ends(num_steps: int, blocks: int) -> list[int]:
    """Steps after which block ``b = 1..blocks-1`` ends: ``floor(b * num_steps / blocks)``, all in (0, T)."""
    if blocks > num_steps:
        raise ValueError(f"search.blocks={blocks} is more than the generator's {num_steps} decoding steps; "
                         f"set search.blocks to at most {num_steps}")
    return [b * num_steps // blocks for b in range(1, blocks)]


def ranked(rows: list[int], scores: dict[int, float], pool: search.Candidates) -> list[int]:
    """``rows`` from the highest score down; ties by the lowest candidate index (as ``search.best_row``)."""
    return sorted(rows, key=lambda row: (-scores[row], pool.slots[row].candidate))


# ----------------------------------------------------------------------------
# Beam search on lookahead images: progressive (GridAR) and lookahead (FR-TTS)

@dataclass
class AnchorRecord(search.CandidateRecord):
    judged_steps: list[int] = field(default_factory=list)
    """Steps after which this row's lookahead image was judged."""
    step_scores: list[float] = field(default_factory=list)
    anchor: list[bool] = field(default_factory=list)
    """Per judged step: whether this row was one of its image's anchors."""
    source: list[int] = field(default_factory=list)
    """Per judged step: the candidate whose state this slot continued from."""
    final_score: float | None = None
    chosen: bool = False


class AnchorSearch:
    """Beam search of width ``anchors`` over the decisions ``decision_steps(T)``, scored by the ORM
    question on lookahead images (module docstring, ``progressive`` steps 2-4)."""

    name = "progressive"
    stream = "progressive"
    judge_source = "checkpoint"

    def __init__(self, judge: YesNoJudge, num_candidates: int, anchors: int,
                 decision_steps: Callable[[int], list[int]]):
        self.judge, self.num_candidates, self.anchors = judge, num_candidates, anchors
        self.decision_steps = decision_steps

    def __call__(self, generator: Generator, requests: list[search.ImageRequest], seed: int
                 ) -> list[search.Selection]:
        decisions = set(self.decision_steps(generator.num_steps))
        pool = search.Candidates(generator, requests, self.num_candidates, seed, AnchorRecord)
        while pool.canvas.step_index < generator.num_steps:
            step = pool.step()
            if step in decisions:
                self.expand(pool, step)
        finals = generator.finish(pool.canvas)
        chosen = search.choose_by_orm(pool, self.judge, finals)
        return [search.Selection(finals[row], records) for row, records in zip(chosen, pool.finished_records())]

    def expand(self, pool: search.Candidates, step: int) -> None:
        """Judge every row's lookahead image; each image's best rows become anchors; the rest copy them."""
        rows = list(range(len(pool.slots)))
        images = pool.charged(pool.slots, lambda: pool.generator.lookahead(pool.canvas))
        scores = pool.ask(rows, lambda im, pr: verifiers.orm_scores(self.judge, im, pr), images).tolist()
        sources = []
        for request in range(len(pool.requests)):
            mine = pool.rows_of(request)
            order = ranked(mine, dict(enumerate(scores)), pool)
            anchors = order[:min(self.anchors, len(mine))]
            others = [row for row in mine if row not in anchors]
            source_of = {row: row for row in anchors}
            source_of.update({row: anchors[i % len(anchors)] for i, row in enumerate(others)})
            for row in mine:
                record = pool.record(row)
                record.judged_steps.append(step)
                record.step_scores.append(scores[row])
                record.anchor.append(row in anchors)
                record.source.append(pool.slots[source_of[row]].candidate)
            sources += [source_of[row] for row in mine]
        search.continue_from(pool, sources, step, self.stream)


class ProgressiveSearch(AnchorSearch):
    """``progressive``: anchors at the ends of ``search.blocks`` blocks (module docstring)."""

    def __init__(self, judge: YesNoJudge, search_cfg: SearchConfig, num_candidates: int):
        super().__init__(judge, num_candidates, search_cfg.anchors,
                         lambda num_steps: block_ends(num_steps, search_cfg.blocks))


class LookaheadSearch(AnchorSearch):
    """``lookahead``: one anchor after every ``search.lookahead_every``-th step (module docstring)."""

    name = "lookahead"
    stream = "lookahead"

    def __init__(self, judge: YesNoJudge, search_cfg: SearchConfig, num_candidates: int):
        every = search_cfg.lookahead_every
        super().__init__(judge, num_candidates, 1,
                         lambda num_steps: list(range(every, num_steps, every)))


# ----------------------------------------------------------------------------
# Confidence without a judge: confidence (final pick by confidence) and confidence_orm (by an ORM)

@dataclass
class ConfidenceRecord(search.CandidateRecord):
    judged_steps: list[int] = field(default_factory=list)
    """Steps after which this path's confidence was computed."""
    confidence: list[float] = field(default_factory=list)
    entropy: float | None = None
    """Mean entropy, top-2 margin and guidance gap over the tokens this path decided, last computed."""
    margin: float | None = None
    guidance_gap: float | None = None
    prune_step: int | None = None
    final_score: float | None = None
    chosen: bool = False


def path_confidence(token_stats: torch.Tensor, weights: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(confidence [B], means [B, 3])`` from ``Canvas.token_stats`` (module docstring, ``confidence``)."""
    stats = token_stats.float().cpu()
    means = stats[:, :3] / stats[:, 3:].clamp_min(1)
    signs = torch.tensor([-weights[0], weights[1], weights[2]], dtype=torch.float32)
    return means @ signs, means


class ConfidencePruning:
    """``confidence``: stop the least confident paths at block ends, then keep the most confident
    survivor (module docstring); no judge."""

    name = "confidence"
    judge_source = None

    def __init__(self, judge: YesNoJudge | None, search_cfg: SearchConfig, num_candidates: int):
        self.judge, self.search, self.num_candidates = judge, search_cfg, num_candidates

    def __call__(self, generator: Generator, requests: list[search.ImageRequest], seed: int
                 ) -> list[search.Selection]:
        ends = set(block_ends(generator.num_steps, self.search.blocks))
        pool = search.Candidates(generator, requests, self.num_candidates, seed, ConfidenceRecord)
        while pool.canvas.step_index < generator.num_steps:
            step = pool.step()
            if step in ends:
                self.stop_weakest(pool, step)
        confidence = self.score(pool, generator.num_steps)
        finals = generator.finish(pool.canvas)
        if self.judge is not None:
            chosen = search.choose_by_orm(pool, self.judge, finals)
        else:
            chosen = [search.best_row(pool.rows_of(r), confidence, pool) for r in range(len(requests))]
            for row in chosen:
                pool.record(row).chosen = True
        return [search.Selection(finals[row], records) for row, records in zip(chosen, pool.finished_records())]

    def score(self, pool: search.Candidates, step: int) -> dict[int, float]:
        """Every running row's confidence now, appended to its trace."""
        confidence, means = path_confidence(pool.canvas.token_stats, self.search.confidence_weights)
        for row in range(len(pool.slots)):
            record = pool.record(row)
            record.judged_steps.append(step)
            record.confidence.append(confidence[row].item())
            record.entropy, record.margin, record.guidance_gap = means[row].tolist()
        return dict(enumerate(confidence.tolist()))

    def stop_weakest(self, pool: search.Candidates, step: int) -> None:
        confidence = self.score(pool, step)
        keep = []
        for request in range(len(pool.requests)):
            mine = pool.rows_of(request)
            kept = ranked(mine, confidence, pool)[:max(1, math.ceil(self.search.confidence_keep * len(mine)))]
            keep += [row for row in mine if row in kept]
        for row in set(range(len(pool.slots))) - set(keep):
            pool.record(row).prune_step = step
        pool.keep(keep)


class ConfidenceOrm(ConfidencePruning):
    """``confidence_orm``: the same pruning, the final pick by the ORM among the survivors."""

    name = "confidence_orm"
    judge_source = "checkpoint"


SCALING_POLICIES: dict[str, type] = {"lookahead": LookaheadSearch, "confidence": ConfidencePruning,
                                     "confidence_orm": ConfidenceOrm, "progressive": ProgressiveSearch}
"""The policies of this module by ``--reward_model`` name (``policies.POLICIES`` holds them beside the paper's)."""
