"""Test-time selection policies: how the candidates of one image are generated and one is kept.

A policy turns a batch of image requests (prompt, prompt index, image index) into one final
image per request plus a trace record per candidate. It drives any backend through the
step-wise ``generation.base.Generator`` protocol and seeds candidate ``c`` of image ``s`` of
prompt ``p`` with ``seeded_generator(seed, p, s, c)``, so images do not depend on batching or on
the number of ranks. ``main.py`` picks a policy by ``run.reward_model`` from ``policies.POLICIES`` and
``policies.build_policy`` builds it with its judge (built once, ``policies.policy_judge``), the
``search:`` settings and N.
The N candidates of every request in a call run as rows of one canvas, and the judge is asked once per
request about that request's candidates (batch-invariant scores, ``Candidates.ask``; upstream
orm.py/parm.py judge one image at a time); how a policy asks its judge is in
``reward_models/verifiers.py``.

Policies (N = ``run.search_num``; each verifier policy is handed the judge ``reward_checkpoints[name]``
with the ``reward:`` settings):

- ``none``: plain decoding of candidate 0 (upstream ``--reward_model ''``, baseline.py).
- ``orm_zs``, ``orm_ft``: best-of-N (paper section 3.2). N paths decoded to the end, the ORM
  question on the finals, the highest P(yes) kept (ties: the lowest candidate index).
- ``prm``: step-level best-of-N; the paper leaves the search open (no algorithm in the paper or its code),
  so it is defined here as greedy search of beam width 1 with N expansions:
  1. Rows ``c = 0..N-1`` start from ``seeded_generator(seed, p, s, c)``.
  2. After every step ``k`` with ``k % search.prm_every == 0`` and ``k < num_steps``, the PRM
     question is asked about every row's preview (the model's full current guess) and the row
     ``j`` with the highest P(yes) is kept (ties: the lowest index).
  3. Every row takes a copy of row ``j``'s state. Row ``j`` keeps its own random stream, so it
     continues exactly the path it was on; every other row ``c`` gets the fresh stream
     ``branch_generator(seed, p, s, c, k, "prm")`` so the N continuations diverge.
  4. After the last step the ORM question (asked of the PRM judge: the image is final, not
     intermediate) scores the N finals and the highest P(yes) is kept.
  The trace of candidate ``c`` is slot ``c``: its score at each judged step, whether it was kept.
- ``parm``: PARM (paper section 4). After every step, each row not yet clear gets the clarity
  question on its preview; at its first clear step the potential question (the 2-turn
  dialogue) once. Potential "no" stops the path at once: the row leaves the canvas
  (``search.prune``; upstream instead runs every path to the end, ``search.prune=false``).
  The survivors' finals get the ORM question from the PARM judge and the highest P(yes) wins
  (best-of-N'). If none survives, the paper's fallback takes the path with the lowest P(no)
  from its potential assessment (a never-clear path counts 1.0 and a sampled answer that is
  neither word 50.0, as upstream parm.py/selector.py). A stopped path has no final image, so
  while no path of the image has survived the lowest-P(no) stopped path so far keeps running
  as the fallback (one row at most): it is dropped as soon as a lower one is stopped (that one
  runs on instead) or a path survives. The kept image is therefore the one ``prune=false``
  keeps, with fewer generator forwards.
- ``oracle``: best-of-N picked by the GenEval evaluator itself (``reward_models/oracle.py``): the upper
  bound of any verifier among the same N paths (the first correct candidate, else candidate 0).
  Not a method of the paper; the shapes-world Table 1 reports it to show how much of the
  possible gain each verifier realises.
- ``parm++``: PARM, then reflection (paper section 5) on the chosen image: the reflection
  verdict; on "no" the judge's critique and region (``ReflectiveJudge.reflect``), the region's
  tokens decoded again (``generation/refine.py``) and a new verdict, for at most
  ``search.reflect_rounds`` rounds, stopping at the first "yes". The output is the last image.

Policies from after the paper (``lookahead``, ``confidence``, ``confidence_orm``, ``progressive``) are
defined in ``scaling_policies.py`` and registered here by name.

Raster backends (LlamaGen, Janus order) run the same policies: a step is then a block of
``generation.rows_per_step`` token rows, and a preview shows the rows decoded so far.

Every candidate's trace record is a dataclass (``OrmRecord``, ``PrmRecord``, ``ParmRecord``; one
JSON line each, ``TraceRecord.as_json``). Past plain decoding each holds ``generator_forwards``
(candidate-rows times model forwards the backend counts in ``num_forwards``) and ``judge_calls``
(rows judged); the image's totals are the sums over its candidates.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Callable, ClassVar, Protocol

import torch

from config import SearchConfig
from generation import refine
from generation.base import CodedPreviews, Generator, NonFiniteLogits, seeded_generator
from reward_models import verifiers
from reward_models.judge import YesNoJudge


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    prompt_index: int
    """Global index of the prompt (line of the prompt file, 0-based)."""
    sample_index: int
    """Which of the prompt's ``run.eval_num`` images."""


# ----------------------------------------------------------------------------
# Trace records: one JSON line per candidate (``main.py`` adds prompt, sample and seed)

@dataclass
class TraceRecord:
    candidate: int
    """The candidate index c."""

    OMITTED_WHEN_UNSET: ClassVar[tuple[str, ...]] = ()
    """Fields written only once set (PARM++ reflection, on the chosen candidate alone)."""

    def as_json(self) -> dict:
        """The record as its trace line's fields, in declaration order."""
        return {key: value for key, value in asdict(self).items()
                if not (key in self.OMITTED_WHEN_UNSET and value is None)}

    @classmethod
    def from_json(cls, line: dict):
        """The record a trace line holds (the runner's prompt and seed fields are left out)."""
        return cls(**{f.name: line[f.name] for f in fields(cls) if f.name in line})


@dataclass
class PlainRecord(TraceRecord):
    chosen: bool = True


@dataclass
class CandidateRecord(TraceRecord):
    generator_forwards: float = 0
    """This candidate's share of the generator's forwards (an int when whole, see ``Candidates``)."""
    judge_calls: int = 0


@dataclass
class OrmRecord(CandidateRecord):
    final_score: float | None = None
    """P(yes) to the ORM question on the final image."""
    chosen: bool = False


@dataclass
class PrmRecord(CandidateRecord):
    prm_steps: list[int] = field(default_factory=list)
    """Steps after which this slot's preview was judged."""
    step_scores: list[float] = field(default_factory=list)
    kept: list[bool] = field(default_factory=list)
    """Per judged step: whether this slot's row was the one every row continued from."""
    final_score: float | None = None
    chosen: bool = False


@dataclass
class ReflectionRound:
    """One PARM++ round on the chosen image: the critique, the redone region and the new verdict."""
    round: int
    critique: str
    region_size: int
    p_yes: float | None = None
    p_no: float | None = None
    verdict: str | None = None


@dataclass
class ParmRecord(CandidateRecord):
    clarity: list[str] = field(default_factory=list)
    """The clarity answer at each judged step until the first "yes"."""
    clear_step: int | None = None
    potential: str | None = None
    """The potential answer, asked once at ``clear_step``."""
    potential_p_yes: float | None = None
    potential_p_no: float | None = None
    prune_step: int | None = None
    """The step after which the path left the canvas (``search.prune``)."""
    final_score: float | None = None
    chosen: bool = False
    fallback: bool = False
    """Chosen by the fallback (no path survived)."""
    rounds: list[ReflectionRound] | None = None
    """PARM++ only, on the chosen candidate: each reflection round."""
    reflect_p_yes: float | None = None
    reflect_p_no: float | None = None

    OMITTED_WHEN_UNSET: ClassVar[tuple[str, ...]] = ("rounds", "reflect_p_yes", "reflect_p_no")


@dataclass
class Selection:
    image: torch.Tensor
    """``uint8 [3, H, W]``: the kept image."""
    candidates: list[TraceRecord]
    """One record per candidate, in candidate order."""


class Policy(Protocol):
    num_candidates: int
    """Generator rows one image needs (N for best-of-N): ``main.py`` sizes batches with it."""

    def __call__(self, generator: Generator, requests: list[ImageRequest], seed: int) -> list[Selection]:
        """One ``Selection`` per request, in order."""
        ...


class PlainDecoding:
    """``reward_model=none``: one candidate (index 0) per image, decoded to the end and kept."""

    judge_source = None

    def __init__(self, judge: None, search: SearchConfig, num_candidates: int):
        del judge, search, num_candidates  # one candidate, no judge: upstream's --reward_model ''
        self.num_candidates = 1

    def __call__(self, generator: Generator, requests: list[ImageRequest], seed: int) -> list[Selection]:
        generators = [seeded_generator(seed, r.prompt_index, r.sample_index, 0) for r in requests]
        canvas = generator.start([r.prompt for r in requests], generators)
        for _ in range(generator.num_steps):
            canvas = _named_step(generator, canvas, lambda row: (requests[row], 0))
        images = generator.finish(canvas)  # uint8 [B, 3, H, W]
        return [Selection(image, [PlainRecord(0)]) for image in images]


def _named_step(generator: Generator, canvas, who: Callable[[int], tuple[ImageRequest, int]]):
    """``generator.step(canvas)``; NaN logits are re-raised naming the (request, candidate) ``who(row)`` and step."""
    try:
        return generator.step(canvas)
    except NonFiniteLogits as err:
        request, candidate = who(err.rows[0])
        more = f" (and {len(err.rows) - 1} more rows of the batch)" if len(err.rows) > 1 else ""
        raise NonFiniteLogits(err.rows, (
            f"NaN or +inf logits at decoding step {canvas.step_index + 1} of {generator.num_steps} for prompt "
            f"{request.prompt_index} {request.prompt!r}, image {request.sample_index}, candidate {candidate}{more}; "
            "the generator gives no usable distribution there: check generation.weights (a damaged "
            "checkpoint) and generation.dtype (float16 overflow)")) from err


# ----------------------------------------------------------------------------
# Seeding beyond (seed, prompt, sample, candidate)

STREAMS = {"prm": 1, "clarity": 2, "potential": 3, "refine": 4, "lookahead": 5, "progressive": 6}
"""Purposes of the extra random streams a candidate may need, one id each."""


def branch_generator(seed: int, prompt_index: int, sample_index: int, candidate: int, step: int,
                     stream: str) -> torch.Generator:
    """A CPU generator for candidate ``c``'s ``stream`` at ``step``, unrelated to its main stream.

    Extends ``seeded_generator`` (whose streams stay as they are) by hashing its seed with the
    step and the stream id, so PRM branches, sampled decisions and PARM++ corrections depend on
    nothing but these numbers and never on batching.
    """
    base = seeded_generator(seed, prompt_index, sample_index, candidate).initial_seed()
    mixed = base * 0x9E3779B97F4A7C15 + (step + 1) * 0xC2B2AE3D27D4EB4F + STREAMS[stream] * 0x165667B19E3779F9
    return torch.Generator().manual_seed(mixed & 0x7FFF_FFFF_FFFF_FFFF)


# ----------------------------------------------------------------------------
# The candidate rows of one policy call

@dataclass(frozen=True)
class Slot:
    request: int
    """Index into the call's requests."""
    candidate: int


class Candidates:
    """The canvas of a policy call, which candidate each of its rows is, and every trace record.

    Rows are grouped by request and ordered by candidate; dropping rows keeps that order. Model
    forwards of a step are shared equally by the rows that took it (the backends count
    candidate-rows times forwards, so the share is exact) and judge calls are charged per row.
    """

    def __init__(self, generator: Generator, requests: list[ImageRequest], num_candidates: int, seed: int,
                 record: type[CandidateRecord]):
        self.generator, self.requests, self.seed = generator, requests, seed
        self.slots = [Slot(r, c) for r in range(len(requests)) for c in range(num_candidates)]
        self.records = [[record(c) for c in range(num_candidates)] for _ in requests]
        generators = [seeded_generator(seed, requests[s.request].prompt_index, requests[s.request].sample_index,
                                       s.candidate) for s in self.slots]
        self.canvas = self.charged(self.slots, lambda: generator.start(self.prompts(), generators))

    # -- rows ---------------------------------------------------------------------------------
    def prompts(self, rows: list[int] | None = None) -> list[str]:
        rows = range(len(self.slots)) if rows is None else rows
        return [self.requests[self.slots[i].request].prompt for i in rows]

    def record(self, row: int) -> CandidateRecord:
        slot = self.slots[row]
        return self.records[slot.request][slot.candidate]

    def rows_of(self, request: int) -> list[int]:
        return [i for i, slot in enumerate(self.slots) if slot.request == request]

    def request_of(self, row: int) -> ImageRequest:
        return self.requests[self.slots[row].request]

    def keep(self, rows: list[int]) -> None:
        """Only ``rows`` (ascending) go on: the others leave the canvas for good."""
        if rows != list(range(len(self.slots))):
            self.canvas = self.canvas.select(torch.tensor(rows, dtype=torch.long))
            self.slots = [self.slots[i] for i in rows]

    def copy_states(self, sources: list[int]) -> None:
        """Row ``i`` takes the state of row ``sources[i]`` (with a clone of its random stream)."""
        assert len(sources) == len(self.slots), "one source per row"
        self.canvas = self.canvas.select(torch.tensor(sources, dtype=torch.long))

    # -- generator and judge --------------------------------------------------------------------
    def charged(self, slots: list[Slot], run: Callable):
        """``run()``, charging the model forwards it makes to ``slots`` in equal shares."""
        before = self.generator.num_forwards
        result = run()
        share = (self.generator.num_forwards - before) / len(slots)
        for slot in slots:
            self.records[slot.request][slot.candidate].generator_forwards += share
        return result

    def step(self) -> int:
        """Every row takes one decoding step; returns the steps done."""
        def who(row: int) -> tuple[ImageRequest, int]:
            return self.request_of(row), self.slots[row].candidate

        self.canvas = self.charged(self.slots, lambda: _named_step(self.generator, self.canvas, who))
        return self.canvas.step_index

    def ask(self, rows: list[int], question: Callable, images: torch.Tensor):
        """``question(images, prompts)`` about ``rows``, one judge call charged to each row.

        Batch invariance: the judge is asked once per request, about that request's rows only, so
        every score is computed in a batch whose shape and content depend on that request alone.
        A judge's float reductions may differ in the last bits with the batch around a row (a
        GEMM's blocking follows the batch size); asked this way, two near-tied candidates rank the
        same whatever ``run.batch_size`` or the number of ranks put beside them.
        """
        for row in rows:
            self.record(row).judge_calls += 1
        if not rows:
            return question(images, [])
        groups = [[k for k, row in enumerate(rows) if self.slots[row].request == request]
                  for request in dict.fromkeys(self.slots[row].request for row in rows)]
        answers = [question(images[group], self.prompts([rows[k] for k in group])) for group in groups]
        order = torch.tensor([k for group in groups for k in group]).argsort()
        return _concat(answers, order)

    def previews(self) -> torch.Tensor | verifiers.CodedImages:
        """Every row's preview: as codes when the backend has them (``CodedPreviews``), so a judge
        that reads codes skips the pixel round trip; else as pixels."""
        if isinstance(self.generator, CodedPreviews):
            return verifiers.CodedImages(self.generator.preview_codes(self.canvas), self.generator.decode)
        return self.generator.preview(self.canvas)

    def finished_records(self) -> list[list[CandidateRecord]]:
        for record in (r for records in self.records for r in records):
            forwards = record.generator_forwards
            record.generator_forwards = int(forwards) if float(forwards).is_integer() else forwards
        return self.records


def _concat(answers: list, order: torch.Tensor):
    """Per-request judge answers joined back into the caller's row order (``order`` undoes the grouping).

    An answer is a tensor, a tuple of tensors (``p_yes, p_no``) or a list (reflections)."""
    first = answers[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(answers)[order]
    if isinstance(first, tuple):
        return tuple(_concat([answer[i] for answer in answers], order) for i in range(len(first)))
    joined = [item for answer in answers for item in answer]
    return [joined[i] for i in order.tolist()]


def best_row(rows: list[int], scores: dict[int, float], candidates: Candidates, lowest: bool = False) -> int:
    """The row with the highest score (``lowest``: the lowest); ties go to the lowest candidate index."""
    sign = 1.0 if lowest else -1.0
    return min(rows, key=lambda row: (sign * scores[row], candidates.slots[row].candidate))


# ----------------------------------------------------------------------------
# ORM best-of-N

class ZeroShotOrm:
    """``orm_zs``: best-of-N with the zero-shot ORM (paper section 3.2; upstream orm.py + selector.orm)."""

    name = "orm_zs"
    judge_source = "checkpoint"

    def __init__(self, judge: YesNoJudge, search: SearchConfig, num_candidates: int):
        del search  # best-of-N has no search settings
        self.judge, self.num_candidates = judge, num_candidates

    def __call__(self, generator: Generator, requests: list[ImageRequest], seed: int) -> list[Selection]:
        pool = Candidates(generator, requests, self.num_candidates, seed, OrmRecord)
        while pool.canvas.step_index < generator.num_steps:
            pool.step()
        finals = generator.finish(pool.canvas)
        chosen = choose_by_orm(pool, self.judge, finals)
        return [Selection(finals[row], records) for row, records in zip(chosen, pool.finished_records())]


def choose_by_orm(pool: Candidates, judge: YesNoJudge, finals: torch.Tensor) -> list[int]:
    """Each request's row with the highest P(yes) to the ORM question on every row's final image."""
    rows = list(range(len(pool.slots)))
    scores = pool.ask(rows, lambda images, prompts: verifiers.orm_scores(judge, images, prompts), finals).tolist()
    chosen = []
    for request in range(len(pool.requests)):
        for row in pool.rows_of(request):
            pool.record(row).final_score = scores[row]
        chosen.append(best_row(pool.rows_of(request), dict(enumerate(scores)), pool))
        pool.record(chosen[-1]).chosen = True
    return chosen


class FineTunedOrm(ZeroShotOrm):
    """``orm_ft``: the same best-of-N with the fine-tuned ORM checkpoint (paper section 3.2)."""

    name = "orm_ft"


class OracleBestOfN(ZeroShotOrm):
    """``oracle``: the same best-of-N with the GenEval evaluator as the judge (module docstring)."""

    name = "oracle"
    judge_source = "oracle"


# ----------------------------------------------------------------------------
# PRM step-level search

class StepSearch:
    """``prm``: greedy step-level search with N expansions (defined in the module docstring)."""

    name = "prm"
    judge_source = "checkpoint"

    def __init__(self, judge: YesNoJudge, search: SearchConfig, num_candidates: int):
        self.judge, self.num_candidates, self.every = judge, num_candidates, search.prm_every

    def __call__(self, generator: Generator, requests: list[ImageRequest], seed: int) -> list[Selection]:
        pool = Candidates(generator, requests, self.num_candidates, seed, PrmRecord)
        while pool.canvas.step_index < generator.num_steps:
            step = pool.step()
            if step < generator.num_steps and step % self.every == 0:
                self.branch(pool, step)
        finals = generator.finish(pool.canvas)
        chosen = choose_by_orm(pool, self.judge, finals)
        return [Selection(finals[row], records) for row, records in zip(chosen, pool.finished_records())]

    def branch(self, pool: Candidates, step: int) -> None:
        """Score every preview, keep each image's best row, continue all N rows from it."""
        rows = list(range(len(pool.slots)))
        scores = pool.ask(rows, lambda images, prompts: verifiers.prm_scores(self.judge, images, prompts),
                          pool.previews())
        sources = []
        for request in range(len(pool.requests)):
            mine = pool.rows_of(request)
            kept = best_row(mine, dict(enumerate(scores.tolist())), pool)
            for row in mine:
                record = pool.record(row)
                record.prm_steps.append(step)
                record.step_scores.append(scores[row].item())
                record.kept.append(row == kept)
            sources += [kept] * len(mine)
        continue_from(pool, sources, step, "prm")


def continue_from(pool: Candidates, sources: list[int], step: int, stream: str) -> None:
    """Row ``i`` takes row ``sources[i]``'s state; a row that is its own source keeps its random stream
    (the kept row continues its path), every other row draws from ``branch_generator(seed, p, s, c,
    step, stream)`` from now on, so the copies diverge."""
    pool.copy_states(sources)
    generators = pool.canvas.generators
    for row, source in enumerate(sources):
        if row != source:
            request, slot = pool.request_of(row), pool.slots[row]
            generators[row] = branch_generator(pool.seed, request.prompt_index, request.sample_index,
                                               slot.candidate, step, stream)


# ----------------------------------------------------------------------------
# PARM

class Parm:
    """``parm``: clarity, potential, best-of-N' and the fallback (module docstring; paper section 4)."""

    name = "parm"
    judge_source = "checkpoint"

    def __init__(self, judge: YesNoJudge, search: SearchConfig, num_candidates: int):
        self.judge, self.search, self.num_candidates = judge, search, num_candidates

    def __call__(self, generator: Generator, requests: list[ImageRequest], seed: int) -> list[Selection]:
        pool, chosen, finals = self.run(generator, requests, seed)
        return [Selection(finals[row], recs) for row, recs in zip(chosen, pool.finished_records())]

    def run(self, generator: Generator, requests: list[ImageRequest], seed: int
            ) -> tuple[Candidates, list[int], torch.Tensor]:
        """The pool after the last step, the chosen row of each request, and the finals of all rows."""
        pool = Candidates(generator, requests, self.num_candidates, seed, ParmRecord)
        while pool.canvas.step_index < generator.num_steps:
            step = pool.step()
            self.judge_step(pool, step)
            if self.search.prune:
                self.prune(pool, step)
        finals = generator.finish(pool.canvas)
        return pool, self.select(pool, finals), finals

    def decide(self, pool: Candidates, row: int, step: int, stream: str, p_yes: float, p_no: float) -> str:
        if not self.search.sampled_decisions:
            return verifiers.argmax_answer(p_yes, p_no)
        request = pool.request_of(row)
        draw = branch_generator(pool.seed, request.prompt_index, request.sample_index, pool.slots[row].candidate,
                                step, stream)
        return verifiers.sampled_answer(p_yes, p_no, draw)

    def judge_step(self, pool: Candidates, step: int) -> None:
        """Clarity for the rows not yet clear; potential, once, for those clear at this step."""
        pending = [row for row in range(len(pool.slots)) if pool.record(row).clear_step is None]
        if not pending:
            return
        previews = pool.previews()[pending]
        p_yes, p_no = pool.ask(pending, lambda im, pr: verifiers.clarity(self.judge, im, pr), previews)
        clear = []
        for k, row in enumerate(pending):
            answer = self.decide(pool, row, step, "clarity", p_yes[k].item(), p_no[k].item())
            pool.record(row).clarity.append(answer)
            if verifiers.is_clear(answer):
                pool.record(row).clear_step = step
                clear.append(k)
        if not clear:
            return
        rows = [pending[k] for k in clear]
        q_yes, q_no = pool.ask(rows, lambda im, pr: verifiers.potential(self.judge, im, pr), previews[clear])
        for k, row in enumerate(rows):
            record = pool.record(row)
            record.potential = self.decide(pool, row, step, "potential", q_yes[k].item(), q_no[k].item())
            record.potential_p_yes, record.potential_p_no = q_yes[k].item(), q_no[k].item()

    def prune(self, pool: Candidates, step: int) -> None:
        """Drop stopped paths; while an image has no survivor, its best stopped path runs on as fallback."""
        keep = []
        for request in range(len(pool.requests)):
            rows = pool.rows_of(request)
            stopped = [row for row in rows if _stopped(pool.record(row))]
            fallback = None
            if stopped and not any(survives(r) for r in pool.records[request]):
                fallback = best_row(stopped, {row: fallback_score(pool.record(row)) for row in stopped}, pool,
                                    lowest=True)
            keep += [row for row in rows if row not in stopped or row == fallback]
        for row in set(range(len(pool.slots))) - set(keep):
            pool.record(row).prune_step = step
        pool.keep(keep)

    def select(self, pool: Candidates, finals: torch.Tensor) -> list[int]:
        """Best-of-N' among the survivors by the final ORM question; else the lowest fallback P(no)."""
        survivors = [row for row in range(len(pool.slots)) if survives(pool.record(row))]
        scores = pool.ask(survivors, lambda im, pr: verifiers.orm_scores(self.judge, im, pr), finals[survivors])
        final_score = dict(zip(survivors, scores.tolist()))
        chosen = []
        for request in range(len(pool.requests)):
            rows = pool.rows_of(request)
            mine = [row for row in rows if row in final_score]
            for row in mine:
                pool.record(row).final_score = final_score[row]
            if mine:
                row = best_row(mine, final_score, pool)
            else:
                row = best_row(rows, {r: fallback_score(pool.record(r)) for r in rows}, pool, lowest=True)
                pool.record(row).fallback = True
            pool.record(row).chosen = True
            chosen.append(row)
        return chosen


def survives(record: ParmRecord) -> bool:
    """Whether a PARM trace record's path passed its potential assessment (best-of-N' keeps it)."""
    return record.potential is not None and verifiers.has_potential(record.potential)


def _stopped(record: ParmRecord) -> bool:
    return record.potential is not None and not verifiers.has_potential(record.potential)


def fallback_score(record: ParmRecord) -> float:
    """P(no) by which PARM's fallback ranks a path when none survives (lowest wins)."""
    return verifiers.fallback_p_no(record.clear_step, record.potential, record.potential_p_no)


# ----------------------------------------------------------------------------
# PARM++

class ParmPlusPlus(Parm):
    """``parm++``: PARM, then reflect-and-correct on the chosen image (module docstring; paper section 5)."""

    name = "parm++"

    def __init__(self, judge: YesNoJudge, search: SearchConfig, num_candidates: int):
        super().__init__(judge, search, num_candidates)
        if not verifiers.is_reflective(self.judge):
            raise ValueError(f"--reward_model parm++ needs a reflective judge (one with reflect(images, prompts), "
                             f"reward_models/verifiers.py::ReflectiveJudge); the {type(self.judge).__name__} set by "
                             "reward.backend has none. Use --reward_model parm instead")
        self.rounds = search.reflect_rounds

    def __call__(self, generator: Generator, requests: list[ImageRequest], seed: int) -> list[Selection]:
        pool, chosen, finals = self.run(generator, requests, seed)
        images = finals[chosen].clone()
        tokens = generator.final_tokens(pool.canvas)[chosen].clone()
        for row in chosen:
            pool.record(row).rounds = []
        active = []
        for request, (row, (p_yes, p_no)) in enumerate(zip(chosen, self.verdicts(pool, chosen, images))):
            pool.record(row).reflect_p_yes, pool.record(row).reflect_p_no = p_yes, p_no
            if verifiers.argmax_answer(p_yes, p_no) == verifiers.NO:
                active.append(request)
        for round_index in range(1, self.rounds + 1):
            if not active:
                break
            active = self.correct(pool, [chosen[r] for r in active], active, images, tokens, round_index)
        return [Selection(images[r], recs) for r, recs in enumerate(pool.finished_records())]

    def verdicts(self, pool: Candidates, rows: list[int], images: torch.Tensor) -> list[tuple[float, float]]:
        p_yes, p_no = pool.ask(rows, lambda im, pr: verifiers.reflection_verdict(self.judge, im, pr), images)
        return list(zip(p_yes.tolist(), p_no.tolist()))

    def correct(self, pool: Candidates, rows: list[int], requests: list[int], images: torch.Tensor,
                tokens: torch.Tensor, round_index: int) -> list[int]:
        """One round for the images ``requests`` (chosen ``rows``): critique, redo the region, verdict.

        Updates ``images`` and ``tokens`` in place; returns the requests still judged "no".
        """
        reflections = pool.ask(rows, lambda im, pr: verifiers.reflect(self.judge, im, pr, tokens.shape[1]),
                               images[requests])
        for row, request, reflection in zip(rows, requests, reflections):
            flagged = reflection.token_mask.to(tokens.device)
            flagged = flagged if flagged.any() else torch.ones_like(flagged)  # no region: redo the whole image
            info, slot = pool.request_of(row), pool.slots[row]
            stream = branch_generator(pool.seed, info.prompt_index, info.sample_index, slot.candidate, round_index,
                                      "refine")
            image, new_tokens = pool.charged([slot], lambda: refine.regenerate(
                pool.generator, [info.prompt], tokens[request:request + 1], flagged[None], [stream]))
            images[request], tokens[request] = image[0], new_tokens[0].to(tokens.device)
            pool.record(row).rounds.append(ReflectionRound(round_index, reflection.text,
                                                           int(reflection.token_mask.sum())))
        still = []
        for row, request, (p_yes, p_no) in zip(rows, requests, self.verdicts(pool, rows, images[requests])):
            answer = verifiers.argmax_answer(p_yes, p_no)
            last = pool.record(row).rounds[-1]
            last.p_yes, last.p_no, last.verdict = p_yes, p_no, answer
            if answer == verifiers.NO:
                still.append(request)
        return still
