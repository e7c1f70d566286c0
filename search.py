"""Test-time selection policies: how the candidates of one image are generated and one is kept.

A policy turns a batch of image requests (prompt, prompt index, image index) into one final
image per request plus a trace record per candidate. It drives any backend through the
step-wise ``generation.base.Generator`` protocol and seeds candidate ``c`` of image ``s`` of
prompt ``p`` with ``seeded_generator(seed, p, s, c)``, so images do not depend on batching or on
the number of ranks. ``main.py`` picks a policy by ``run.reward_model`` from ``POLICIES``.
The N candidates of every request in a call run as rows of one canvas, and every judge call
of a step is one batch (anchors.md D.3); how a policy asks its judge is in
``reward_models/verifiers.py``.

Policies (N = ``run.search_num``; each verifier policy loads the judge ``reward_checkpoints[name]``
with the ``reward:`` settings):

- ``none``: plain decoding of candidate 0 (upstream ``--reward_model ''``, baseline.py).
- ``orm_zs``, ``orm_ft``: best-of-N (paper section 3.2). N paths decoded to the end, the ORM
  question on the finals, the highest P(yes) kept (ties: the lowest candidate index).
- ``prm``: step-level best-of-N; the paper leaves the search open (paper.md sections 2 and 8),
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
- ``oracle``: best-of-N picked by the GenEval evaluator itself (``geneval/oracle.py``): the upper
  bound of any verifier among the same N paths (the first correct candidate, else candidate 0).
  Not a method of the paper; the shapes-world Table 1 reports it to show how much of the
  possible gain each verifier realises.
- ``parm++``: PARM, then reflection (paper section 5) on the chosen image: the reflection
  verdict; on "no" the judge's critique and region (``ReflectiveJudge.reflect``), the region's
  tokens decoded again (``generation/refine.py``) and a new verdict, for at most
  ``search.reflect_rounds`` rounds, stopping at the first "yes". The output is the last image.

Raster backends (LlamaGen, Janus order) run the same policies: a step is then a block of
``generation.rows_per_step`` token rows, and a preview shows the rows decoded so far.

Every candidate record holds ``generator_forwards`` (candidate-rows times model forwards the
backend counts in ``num_forwards``, null for a backend that does not count) and ``judge_calls``
(rows judged); the image's totals are the sums over its candidates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

import reward_models
from config import Config, SearchConfig
from generation import refine
from generation.base import Generator, run_to_end, seeded_generator
from reward_models import verifiers
from reward_models.judge import YesNoJudge


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    prompt_index: int
    """Global index of the prompt (line of the prompt file, 0-based)."""
    sample_index: int
    """Which of the prompt's ``run.eval_num`` images."""


@dataclass
class Selection:
    image: torch.Tensor
    """``uint8 [3, H, W]``: the kept image."""
    candidates: list[dict]
    """One record per candidate, each with at least ``candidate`` (its index c) and whatever the
    policy wants traced (``chosen``, scores, prune step); ``main.py`` adds prompt and seed."""


class Policy(Protocol):
    num_candidates: int
    """Generator rows one image needs (N for best-of-N): ``main.py`` sizes batches with it."""

    def __call__(self, generator: Generator, requests: list[ImageRequest], seed: int) -> list[Selection]:
        """One ``Selection`` per request, in order."""
        ...


class PlainDecoding:
    """``reward_model=none``: one candidate (index 0) per image, decoded to the end and kept."""

    num_candidates = 1

    def __init__(self, cfg: Config, device: torch.device):
        del cfg, device  # nothing to load; verifier policies build their reward models here

    def __call__(self, generator: Generator, requests: list[ImageRequest], seed: int) -> list[Selection]:
        generators = [seeded_generator(seed, r.prompt_index, r.sample_index, 0) for r in requests]
        images = run_to_end(generator, [r.prompt for r in requests], generators)  # uint8 [B, 3, H, W]
        return [Selection(image, [{"candidate": 0, "chosen": True}]) for image in images]


# ----------------------------------------------------------------------------
# Seeding beyond (seed, prompt, sample, candidate)

STREAMS = {"prm": 1, "clarity": 2, "potential": 3, "refine": 4}
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
                 fields: Callable[[], dict]):
        self.generator, self.requests, self.seed = generator, requests, seed
        self.slots = [Slot(r, c) for r in range(len(requests)) for c in range(num_candidates)]
        self.records = [[{"candidate": c, "generator_forwards": 0, "judge_calls": 0, **fields()}
                         for c in range(num_candidates)] for _ in requests]
        self.counts_forwards = _forwards(generator) is not None
        generators = [seeded_generator(seed, requests[s.request].prompt_index, requests[s.request].sample_index,
                                       s.candidate) for s in self.slots]
        self.canvas = self.charged(self.slots, lambda: generator.start(self.prompts(), generators))

    # -- rows ---------------------------------------------------------------------------------
    def prompts(self, rows: list[int] | None = None) -> list[str]:
        rows = range(len(self.slots)) if rows is None else rows
        return [self.requests[self.slots[i].request].prompt for i in rows]

    def record(self, row: int) -> dict:
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
        before = _forwards(self.generator)
        result = run()
        if self.counts_forwards:
            share = (_forwards(self.generator) - before) / len(slots)
            for slot in slots:
                self.records[slot.request][slot.candidate]["generator_forwards"] += share
        return result

    def step(self) -> int:
        """Every row takes one decoding step; returns the steps done."""
        self.canvas = self.charged(self.slots, lambda: self.generator.step(self.canvas))
        return self.canvas.step_index

    def ask(self, rows: list[int], question: Callable, images: torch.Tensor):
        """``question(images, prompts)`` about ``rows``, one judge call charged to each row."""
        for row in rows:
            self.record(row)["judge_calls"] += 1
        return question(images, self.prompts(rows))

    def previews(self) -> torch.Tensor | verifiers.CodedImages:
        """Every row's preview: as codes when the backend has them (an optional ``preview_codes``
        whose ``decode`` is ``preview``), so a judge that reads codes skips the pixel round trip."""
        codes = getattr(self.generator, "preview_codes", None)
        if callable(codes) and callable(getattr(self.generator, "decode", None)):
            return verifiers.CodedImages(codes(self.canvas), self.generator.decode)
        return self.generator.preview(self.canvas)

    def finished_records(self) -> list[list[dict]]:
        for record in (r for records in self.records for r in records):
            forwards = record["generator_forwards"]
            record["generator_forwards"] = (int(forwards) if float(forwards).is_integer() else forwards) \
                if self.counts_forwards else None
        return self.records


def _forwards(generator: Generator) -> int | None:
    # Not part of the Generator protocol yet; every backend of this repository counts them.
    return getattr(generator, "num_forwards", None)


def best_row(rows: list[int], scores: dict[int, float], candidates: Candidates, lowest: bool = False) -> int:
    """The row with the highest score (``lowest``: the lowest); ties go to the lowest candidate index."""
    sign = 1.0 if lowest else -1.0
    return min(rows, key=lambda row: (sign * scores[row], candidates.slots[row].candidate))


def load_judge(cfg: Config, name: str, device, judge: YesNoJudge | None) -> YesNoJudge:
    """``judge`` when given (tests, callers sharing one judge); else the preset's checkpoint for ``name``."""
    if judge is not None:
        return judge
    return reward_models.build_judge(verifiers.judge_config(cfg.reward, cfg.reward_checkpoints, name), device)


# ----------------------------------------------------------------------------
# ORM best-of-N

class ZeroShotOrm:
    """``orm_zs``: best-of-N with the zero-shot ORM (paper section 3.2; upstream orm.py + selector.orm)."""

    name = "orm_zs"

    def __init__(self, cfg: Config, device: torch.device, judge: YesNoJudge | None = None):
        self.num_candidates = cfg.run.search_num
        self.judge = load_judge(cfg, self.name, device, judge)

    def __call__(self, generator: Generator, requests: list[ImageRequest], seed: int) -> list[Selection]:
        pool = Candidates(generator, requests, self.num_candidates, seed, _orm_fields)
        while pool.canvas.step_index < generator.num_steps:
            pool.step()
        finals = generator.finish(pool.canvas)
        chosen = choose_by_orm(pool, self.judge, finals)
        return [Selection(finals[row], records) for row, records in zip(chosen, pool.finished_records())]


def _orm_fields() -> dict:
    return {"final_score": None, "chosen": False}


def choose_by_orm(pool: Candidates, judge: YesNoJudge, finals: torch.Tensor) -> list[int]:
    """Each request's row with the highest P(yes) to the ORM question on every row's final image."""
    rows = list(range(len(pool.slots)))
    scores = pool.ask(rows, lambda images, prompts: verifiers.orm_scores(judge, images, prompts), finals).tolist()
    chosen = []
    for request in range(len(pool.requests)):
        for row in pool.rows_of(request):
            pool.record(row)["final_score"] = scores[row]
        chosen.append(best_row(pool.rows_of(request), dict(enumerate(scores)), pool))
        pool.record(chosen[-1])["chosen"] = True
    return chosen


class FineTunedOrm(ZeroShotOrm):
    """``orm_ft``: the same best-of-N with the fine-tuned ORM checkpoint (paper section 3.2)."""

    name = "orm_ft"


class OracleBestOfN(ZeroShotOrm):
    """``oracle``: the same best-of-N with the GenEval evaluator as the judge (module docstring)."""

    name = "oracle"

    def __init__(self, cfg: Config, device: torch.device, judge: YesNoJudge | None = None):
        from distributed import env_ranks, resolve_device
        from geneval.oracle import GenEvalOracle

        self.num_candidates = cfg.run.search_num
        self.judge = judge or GenEvalOracle.from_files(
            cfg.geneval, cfg.run.metadata_file, resolve_device(cfg.geneval.device, env_ranks()[2]))


# ----------------------------------------------------------------------------
# PRM step-level search

class StepSearch:
    """``prm``: greedy step-level search with N expansions (defined in the module docstring)."""

    name = "prm"

    def __init__(self, cfg: Config, device: torch.device, judge: YesNoJudge | None = None):
        self.num_candidates = cfg.run.search_num
        self.every = cfg.search.prm_every
        self.judge = load_judge(cfg, self.name, device, judge)

    def __call__(self, generator: Generator, requests: list[ImageRequest], seed: int) -> list[Selection]:
        pool = Candidates(generator, requests, self.num_candidates, seed, _prm_fields)
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
                record["prm_steps"].append(step)
                record["step_scores"].append(scores[row].item())
                record["kept"].append(row == kept)
            sources += [kept] * len(mine)
        pool.copy_states(sources)
        generators = _canvas_generators(pool.canvas, "prm")
        for row, source in enumerate(sources):
            if row != source:  # the kept row continues its own stream; the copies branch off
                request, slot = pool.request_of(row), pool.slots[row]
                generators[row] = branch_generator(pool.seed, request.prompt_index, request.sample_index,
                                                   slot.candidate, step, "prm")


def _prm_fields() -> dict:
    return {"prm_steps": [], "step_scores": [], "kept": [], "final_score": None, "chosen": False}


def _canvas_generators(canvas, policy: str) -> list[torch.Generator]:
    # Not part of the Canvas protocol yet; every backend of this repository keeps one per row.
    generators = getattr(canvas, "generators", None)
    if not isinstance(generators, list):
        raise ValueError(f"--reward_model {policy} needs a canvas with a per-row 'generators' list; "
                         f"{type(canvas).__name__} has none")
    return generators


# ----------------------------------------------------------------------------
# PARM

def _parm_fields() -> dict:
    return {"clarity": [], "clear_step": None, "potential": None, "potential_p_yes": None, "potential_p_no": None,
            "prune_step": None, "final_score": None, "chosen": False, "fallback": False}


class Parm:
    """``parm``: clarity, potential, best-of-N' and the fallback (module docstring; paper section 4)."""

    name = "parm"

    def __init__(self, cfg: Config, device: torch.device, judge: YesNoJudge | None = None):
        self.num_candidates = cfg.run.search_num
        self.search: SearchConfig = cfg.search
        self.judge = load_judge(cfg, self.name, device, judge)

    def __call__(self, generator: Generator, requests: list[ImageRequest], seed: int) -> list[Selection]:
        pool, chosen, finals = self.run(generator, requests, seed)
        return [Selection(finals[row], recs) for row, recs in zip(chosen, pool.finished_records())]

    def run(self, generator: Generator, requests: list[ImageRequest], seed: int
            ) -> tuple[Candidates, list[int], torch.Tensor]:
        """The pool after the last step, the chosen row of each request, and the finals of all rows."""
        pool = Candidates(generator, requests, self.num_candidates, seed, _parm_fields)
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
        pending = [row for row in range(len(pool.slots)) if pool.record(row)["clear_step"] is None]
        if not pending:
            return
        previews = pool.previews()[pending]
        p_yes, p_no = pool.ask(pending, lambda im, pr: verifiers.clarity(self.judge, im, pr), previews)
        clear = []
        for k, row in enumerate(pending):
            answer = self.decide(pool, row, step, "clarity", p_yes[k].item(), p_no[k].item())
            pool.record(row)["clarity"].append(answer)
            if verifiers.is_clear(answer):
                pool.record(row)["clear_step"] = step
                clear.append(k)
        if not clear:
            return
        rows = [pending[k] for k in clear]
        q_yes, q_no = pool.ask(rows, lambda im, pr: verifiers.potential(self.judge, im, pr), previews[clear])
        for k, row in enumerate(rows):
            record = pool.record(row)
            record["potential"] = self.decide(pool, row, step, "potential", q_yes[k].item(), q_no[k].item())
            record["potential_p_yes"], record["potential_p_no"] = q_yes[k].item(), q_no[k].item()

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
            pool.record(row)["prune_step"] = step
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
                pool.record(row)["final_score"] = final_score[row]
            if mine:
                row = best_row(mine, final_score, pool)
            else:
                row = best_row(rows, {r: fallback_score(pool.record(r)) for r in rows}, pool, lowest=True)
                pool.record(row)["fallback"] = True
            pool.record(row)["chosen"] = True
            chosen.append(row)
        return chosen


def survives(record: dict) -> bool:
    """Whether a PARM trace record's path passed its potential assessment (best-of-N' keeps it)."""
    return record["potential"] is not None and verifiers.has_potential(record["potential"])


def _stopped(record: dict) -> bool:
    return record["potential"] is not None and not verifiers.has_potential(record["potential"])


def fallback_score(record: dict) -> float:
    """P(no) by which PARM's fallback ranks a path when none survives (lowest wins)."""
    return verifiers.fallback_p_no(record["clear_step"], record["potential"], record["potential_p_no"])


# ----------------------------------------------------------------------------
# PARM++

class ParmPlusPlus(Parm):
    """``parm++``: PARM, then reflect-and-correct on the chosen image (module docstring; paper section 5)."""

    name = "parm++"

    def __init__(self, cfg: Config, device: torch.device, judge: YesNoJudge | None = None):
        super().__init__(cfg, device, judge)
        if not verifiers.is_reflective(self.judge):
            raise ValueError(f"--reward_model parm++ needs a reflective judge (one with reflect(images, prompts), "
                             f"reward_models/verifiers.py::ReflectiveJudge); the {type(self.judge).__name__} of "
                             f"reward.backend={cfg.reward.backend!r} has none. Use --reward_model parm instead")
        self.rounds = cfg.search.reflect_rounds

    def __call__(self, generator: Generator, requests: list[ImageRequest], seed: int) -> list[Selection]:
        pool, chosen, finals = self.run(generator, requests, seed)
        images = finals[chosen].clone()
        tokens = refine.final_tokens(generator, pool.canvas)[chosen].clone()
        for row in chosen:
            pool.record(row)["rounds"] = []
        active = []
        for request, (row, (p_yes, p_no)) in enumerate(zip(chosen, self.verdicts(pool, chosen, images))):
            pool.record(row)["reflect_p_yes"], pool.record(row)["reflect_p_no"] = p_yes, p_no
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
            pool.record(row)["rounds"].append({"round": round_index, "critique": reflection.text,
                                               "region_size": int(reflection.token_mask.sum())})
        still = []
        for row, request, (p_yes, p_no) in zip(rows, requests, self.verdicts(pool, rows, images[requests])):
            answer = verifiers.argmax_answer(p_yes, p_no)
            pool.record(row)["rounds"][-1].update({"p_yes": p_yes, "p_no": p_no, "verdict": answer})
            if answer == verifiers.NO:
                still.append(request)
        return still


POLICIES: dict[str, type] = {"none": PlainDecoding, "orm_zs": ZeroShotOrm, "orm_ft": FineTunedOrm,
                             "prm": StepSearch, "parm": Parm, "parm++": ParmPlusPlus, "oracle": OracleBestOfN}
"""``run.reward_model`` name -> policy class, constructed as ``cls(cfg, device)``."""


def build_policy(cfg: Config, device: torch.device) -> Policy:
    return POLICIES[check_policy_name(cfg.run.reward_model)](cfg, device)


def check_policy_name(name: str) -> str:
    if name not in POLICIES:
        raise ValueError(f"unknown --reward_model {name!r}; valid: {sorted(POLICIES)}")
    return name
