"""Contracts of the test-time search policies (search.py) on a tiny random generator and fake judges.

The generator is random, so its images are deterministic noise. Two kinds of fake judge:
- ``BrightnessJudge``: P(yes) = mean brightness, for checks against recomputed images;
- ``TableJudge``: recognises each plain-decoding path's preview at each step by its bytes and
  answers from a hand-written table, so PARM's decisions, stops and picks are known in advance.
"""
from __future__ import annotations

import json
from dataclasses import replace
from collections import Counter
from pathlib import Path

import pytest
import torch

import main as runner
import reward_models
from config import SearchConfig, load_config
from generation import refine
from generation.base import seeded_generator
from reward_models import verifiers
from reward_models.verifiers import Reflection
import policies
from policies import POLICIES
from search import Parm, ParmPlusPlus, StepSearch, ZeroShotOrm, branch_generator
from conftest import write_shapes_suite
from search_helpers import REQUESTS, SEED, STEPS, BrightnessJudge, TableJudge, brightness, calls, forwards, \
    make_generator, parm_rule, plain_paths, policy_args, row_forwards

REPO = Path(__file__).resolve().parents[1]
# ----------------------------------------------------------------------------
# ORM best-of-N

@pytest.mark.parametrize("order", ["mask", "raster"])
def test_orm_keeps_the_brightest_final(tiny_weights, order):
    generator = make_generator(tiny_weights, order)
    _, finals = plain_paths(generator, REQUESTS, 5)
    policy = ZeroShotOrm(**policy_args(5), judge=BrightnessJudge())
    before = generator.num_forwards
    selections = policy(generator, REQUESTS, SEED)
    per_row = row_forwards(order, STEPS)
    assert generator.num_forwards - before == 2 * 5 * per_row
    for request, selection in enumerate(selections):
        scores = brightness(finals[request])
        best = int(scores.argmax())
        assert torch.equal(selection.image, finals[request, best])
        assert [r.chosen for r in selection.candidates] == [c == best for c in range(5)]
        assert [r.final_score for r in selection.candidates] == pytest.approx(scores.tolist())
        assert forwards(selection) == [per_row] * 5 and calls(selection) == [1] * 5


# ----------------------------------------------------------------------------
# PRM step-level search

@pytest.mark.parametrize("order", ["mask", "raster"])
def test_prm_keeps_the_best_row_at_every_judged_step(tiny_weights, order):
    generator = make_generator(tiny_weights, order)
    judge = BrightnessJudge()
    [selection] = StepSearch(**policy_args(4, prm_every=1), judge=judge)(generator, REQUESTS[:1], SEED)
    records = selection.candidates
    assert all(r.prm_steps == [1, 2, 3] for r in records)  # the last step is judged as final only
    for k in range(3):
        scores = [r.step_scores[k] for r in records]
        kept = [r.kept[k] for r in records]
        assert kept == [c == max(range(4), key=lambda i: (scores[i], -i)) for c in range(4)]
    # Step 1 scores the untouched seeded paths.
    table, _ = plain_paths(generator, REQUESTS[:1], 4)
    first = [image for kind, image in judge.asked[:4]]
    assert [table[image.numpy().tobytes()] for image in first] == [(0, c, 1) for c in range(4)]
    assert [r.step_scores[0] for r in records] == pytest.approx(brightness(torch.stack(first)).tolist())
    finals = [image for kind, image in judge.asked if kind == "orm"]
    best = max(range(4), key=lambda c: (records[c].final_score, -c))
    assert torch.equal(selection.image, finals[best]) and records[best].chosen
    assert calls(selection) == [4] * 4  # 3 judged steps + the final


@pytest.mark.parametrize("order", ["mask", "raster"])
def test_prm_kept_row_continues_its_path_and_copies_diverge(tiny_weights, order):
    generator = make_generator(tiny_weights, order)
    _, plain_finals = plain_paths(generator, REQUESTS[:1], 4)
    judge = BrightnessJudge()
    [selection] = StepSearch(**policy_args(4, prm_every=2), judge=judge)(generator, REQUESTS[:1], SEED)
    assert all(r.prm_steps == [2] for r in selection.candidates)
    kept = [r.kept[0] for r in selection.candidates].index(True)
    finals = [image for kind, image in judge.asked if kind == "orm"]
    assert torch.equal(finals[kept], plain_finals[0, kept])  # the kept row went on with its own stream
    distinct = {image.numpy().tobytes() for image in finals}
    assert len(distinct) == 4  # the three copies drew fresh streams and diverged


# ----------------------------------------------------------------------------
# PARM

CLEAR_AT = {0: 1, 1: 2, 2: None, 3: 1, 4: 3, 5: 2}
POTENTIAL = {0: (0.9, 0.1), 1: (0.3, 0.7), 3: (0.4, 0.6), 4: (0.8, 0.2), 5: (0.1, 0.9)}
FINAL = {0: 0.3, 4: 0.8}


@pytest.mark.parametrize("order", ["mask", "raster"])
@pytest.mark.parametrize("prune", [True, False])
def test_parm_stops_paths_and_picks_among_survivors(tiny_weights, order, prune):
    generator = make_generator(tiny_weights, order)
    table, finals = plain_paths(generator, REQUESTS, 6)
    judge = TableJudge(table, parm_rule(CLEAR_AT, POTENTIAL, FINAL))
    selections = Parm(**policy_args(6, prune=prune), judge=judge)(generator, REQUESTS, SEED)
    for request, selection in enumerate(selections):
        records = selection.candidates
        assert torch.equal(selection.image, finals[request, 4])
        assert [r.chosen for r in records] == [c == 4 for c in range(6)]
        assert [r.clarity for r in records] == [["yes"], ["no", "yes"], ["no"] * 4, ["yes"], ["no", "no", "yes"],
                                                   ["no", "yes"]]
        assert [r.clear_step for r in records] == [1, 2, None, 1, 3, 2]
        assert [r.potential for r in records] == ["yes", "no", None, "no", "yes", "no"]
        assert [r.potential_p_no for r in records] == pytest.approx([0.1, 0.7, None, 0.6, 0.2, 0.9])
        assert [r.final_score for r in records] == pytest.approx([0.3, None, None, None, 0.8, None])
        assert not any(r.fallback for r in records)
        # c0 survives at step 1, so every stopped path leaves at once: c3 at 1, c1 and c5 at 2.
        steps_run = [4, 2, 4, 1, 4, 2] if prune else [4] * 6
        assert forwards(selection) == [row_forwards(order, s) for s in steps_run]
        assert [r.prune_step for r in records] == ([None, 2, None, 1, None, 2] if prune else [None] * 6)
        assert calls(selection) == [3, 3, 4, 2, 5, 3]  # clarity until clear, potential once, final if survivor
    assert judge.asked == {"clarity": 2 * 13, "potential": 2 * 5, "orm": 2 * 2}


@pytest.mark.parametrize("order", ["mask", "raster"])
@pytest.mark.parametrize("prune", [True, False])
def test_parm_fallback_when_no_path_survives(tiny_weights, order, prune):
    generator = make_generator(tiny_weights, order)
    table, finals = plain_paths(generator, REQUESTS[:1], 4)
    clear_at, potential = {0: 1, 1: 2, 2: 3, 3: None}, {0: (0.2, 0.8), 1: (0.45, 0.5), 2: (0.3, 0.6)}
    judge = TableJudge(table, parm_rule(clear_at, potential, {}))
    [selection] = Parm(**policy_args(4, prune=prune), judge=judge)(generator, REQUESTS[:1], SEED)
    records = selection.candidates
    # Lowest P(no): c1 (0.5) beats c2 (0.6), c0 (0.8) and the never-clear c3 (counted 1.0).
    assert torch.equal(selection.image, finals[0, 1])
    assert [(r.chosen, r.fallback) for r in records] == [(False, False), (True, True), (False, False),
                                                               (False, False)]
    assert judge.asked["orm"] == 0
    if prune:  # c0 runs on as the fallback until c1 beats it at step 2; c2 is worse and leaves at once
        assert [r.prune_step for r in records] == [2, None, 3, None]
        assert forwards(selection) == [row_forwards(order, s) for s in [2, 4, 3, 4]]
    else:
        assert [r.prune_step for r in records] == [None] * 4
        assert forwards(selection) == [row_forwards(order, STEPS)] * 4


def test_parm_prunes_below_best_of_n_compute(tiny_weights):
    generator = make_generator(tiny_weights, "mask")
    table, _ = plain_paths(generator, REQUESTS, 6)
    parm = Parm(**policy_args(6), judge=TableJudge(table, parm_rule(CLEAR_AT, POTENTIAL, FINAL)))
    orm = ZeroShotOrm(**policy_args(6), judge=BrightnessJudge())
    start = generator.num_forwards
    parm_selections = parm(generator, REQUESTS, SEED)
    middle = generator.num_forwards
    orm(generator, REQUESTS, SEED)
    assert (middle - start, generator.num_forwards - middle) == (2 * 17, 2 * 24)
    assert sum(sum(forwards(s)) for s in parm_selections) == middle - start


def test_sampled_decisions_follow_the_seeded_draw():
    assert verifiers.sampled_answer(1.0, 0.0, torch.Generator().manual_seed(1)) == "yes"
    assert verifiers.sampled_answer(0.0, 1.0, torch.Generator().manual_seed(1)) == "no"
    assert verifiers.sampled_answer(0.0, 0.0, torch.Generator().manual_seed(1)) == "other"
    assert verifiers.is_clear("other") and not verifiers.has_potential("other")  # upstream's == 'no' / 'yes' in
    assert verifiers.argmax_answer(0.5, 0.5) == "no" and verifiers.argmax_answer(0.6, 0.3) == "yes"
    assert verifiers.fallback_p_no(None, None, None) == 1.0 and verifiers.fallback_p_no(2, "other", 0.1) == 50.0
    draws = [branch_generator(0, 1, 2, c, 3, "clarity").initial_seed() for c in range(4)]
    assert len(set(draws)) == 4 and draws[0] == branch_generator(0, 1, 2, 0, 3, "clarity").initial_seed()
    assert branch_generator(0, 1, 2, 0, 3, "potential").initial_seed() != draws[0]
    assert seeded_generator(0, 1, 2, 0).initial_seed() not in draws


# ----------------------------------------------------------------------------
# PARM++

class ReflectingJudge(BrightnessJudge):
    """Clarity and potential always yes; the verdict turns yes once ``reflect`` ran ``satisfied_after``
    times for the prompt; every critique flags ``region``."""

    def __init__(self, satisfied_after: int, region: torch.Tensor):
        super().__init__()
        self.satisfied_after, self.region, self.reflected = satisfied_after, region, Counter()

    def yes_no_probs(self, images, questions):
        p_yes, _ = super().yes_no_probs(images, questions)
        p_yes = p_yes * 0.5  # below 0.5: "no", until satisfied
        for i, question in enumerate(questions):
            if question.kind in ("clarity", "potential") or self.reflected[question.prompt] >= self.satisfied_after:
                p_yes[i] = 0.9
        return p_yes, 1 - p_yes

    def reflect(self, images, prompts):
        self.reflected.update(prompts)
        return [Reflection(f"critique {self.reflected[p]}", self.region.clone()) for p in prompts]


def token_region(first: int, last: int) -> torch.Tensor:
    region = torch.zeros(64, dtype=torch.bool)
    region[first:last] = True
    return region


@pytest.mark.parametrize("satisfied_after, rounds", [(0, 0), (2, 2), (10, 3)])
def test_parm_plus_plus_stops_at_the_first_yes_within_three_rounds(tiny_weights, satisfied_after, rounds):
    generator = make_generator(tiny_weights, "mask")
    judge = ReflectingJudge(satisfied_after, token_region(0, 8))
    reference = ReflectingJudge(satisfied_after, token_region(0, 8))  # PARM alone: the same choice
    [parm] = Parm(**policy_args(4), judge=reference)(generator, REQUESTS[:1], SEED)
    [selection] = ParmPlusPlus(**policy_args(4), judge=judge)(generator, REQUESTS[:1], SEED)
    chosen = [r for r in selection.candidates if r.chosen]
    assert [r.candidate for r in chosen] == [r.candidate for r in parm.candidates if r.chosen]
    record = chosen[0]
    assert judge.reflected[REQUESTS[0].prompt] == rounds
    assert [(r.round, r.region_size, r.critique) for r in record.rounds] == \
        [(k, 8, f"critique {k}") for k in range(1, rounds + 1)]
    expected = ["no"] * rounds if satisfied_after > 3 else ["no"] * (rounds - 1) + ["yes"] * (rounds > 0)
    assert [r.verdict for r in record.rounds] == expected
    # 8 flagged of 64 tokens: decoding resumes at step 3 of 4, one forward per round.
    assert record.generator_forwards == STEPS + rounds
    # The critique flags the top token row (pixel rows 0-7): the rest of the image is untouched.
    assert torch.equal(selection.image[:, 8:], parm.image[:, 8:])
    assert torch.equal(selection.image, parm.image) == (rounds == 0)


def test_parm_plus_plus_honours_reflect_rounds_and_needs_a_reflective_judge(tiny_weights):
    generator = make_generator(tiny_weights, "mask")
    judge = ReflectingJudge(10, token_region(0, 8))
    [selection] = ParmPlusPlus(**policy_args(4, reflect_rounds=1), judge=judge)(generator, REQUESTS[:1], SEED)
    assert [len(r.rounds or []) for r in selection.candidates if r.chosen] == [1]
    with pytest.raises(ValueError, match="parm\\+\\+ needs a reflective judge"):
        ParmPlusPlus(**policy_args(4), judge=BrightnessJudge())


@pytest.mark.parametrize("order, flagged, unchanged_tokens", [
    ("mask", (10, 13), None),  # mask: exactly the unflagged tokens stay
    ("raster", (41, 44), 32),  # raster, 2 rows per step: the flag in token row 5 redoes rows 4-7
])
def test_self_correction_keeps_what_it_should(tiny_weights, order, flagged, unchanged_tokens):
    generator = make_generator(tiny_weights, order)
    prompts = [REQUESTS[0].prompt]
    canvas = generator.start(prompts, [seeded_generator(SEED, 0, 0, 0)])
    while canvas.step_index < STEPS:
        canvas = generator.step(canvas)
    tokens = generator.final_tokens(canvas)
    region = token_region(*flagged)[None]
    images, new = refine.regenerate(generator, prompts, tokens, region, [torch.Generator().manual_seed(5)])
    assert torch.equal(images, generator.decode(new))
    kept = ~region if unchanged_tokens is None else torch.arange(64)[None] < unchanged_tokens
    assert torch.equal(new[kept], tokens[kept])
    assert not torch.equal(new[region], tokens[region])
    assert (refine.resume_step(64, 4, 64), refine.resume_step(64, 4, 50), refine.resume_step(64, 4, 45),
            refine.resume_step(64, 4, 3)) == (0, 1, 2, 3)
    # float32 as upstream: step 8 of 12 starts with floor(16 * 0.49999997) = 7 unknown, not 8
    assert (refine.resume_step(16, 12, 8), refine.resume_step(16, 12, 7)) == (7, 8)


# ----------------------------------------------------------------------------
# Batching, registry, end to end

def run_policy(name: str, generator, requests, **search):
    judge = ReflectingJudge(2, token_region(4, 12)) if name == "parm++" else BrightnessJudge()
    return POLICIES[name](**policy_args(3, **search), judge=judge)(generator, requests, SEED)


@pytest.mark.parametrize("order", ["mask", "raster"])
@pytest.mark.parametrize("name, search", [("orm_zs", {}), ("prm", {}), ("parm", {"sampled_decisions": True}),
                                          ("parm++", {})])
def test_selection_does_not_depend_on_the_batch(tiny_weights, order, name, search):
    generator = make_generator(tiny_weights, order)
    together = run_policy(name, generator, REQUESTS, **search)
    alone = [run_policy(name, generator, [request], **search)[0] for request in REQUESTS]
    for a, b in zip(together, alone):
        assert torch.equal(a.image, b.image) and a.candidates == b.candidates


def test_policies_load_the_preset_checkpoint(monkeypatch):
    monkeypatch.setitem(reward_models.JUDGES, "fake", f"{__name__}:BrightnessJudge")
    cfg = load_config(None, ["reward.backend=fake", "reward_checkpoints.parm=ckpts/parm", "run.search_num=3"])
    assert policies.build_policy(replace(cfg, run=replace(cfg.run, reward_model="parm")), "cpu").judge.checkpoint \
        == "ckpts/parm"
    with pytest.raises(ValueError, match="no reward_checkpoints entry 'orm_ft'"):
        policies.policy_judge(replace(cfg, run=replace(cfg.run, reward_model="orm_ft")), "cpu")
    assert set(POLICIES) == {"none", "orm_zs", "orm_ft", "prm", "parm", "parm++", "oracle", "lookahead", "confidence",
                             "confidence_orm", "progressive"}


def test_main_runs_parm_end_to_end(tiny_weights, tmp_path, monkeypatch):
    monkeypatch.setitem(reward_models.JUDGES, "fake", f"{__name__}:BrightnessJudge")
    records, prompts_file, metadata_file = write_shapes_suite(tmp_path, slice(2))
    outdir = tmp_path / "out"
    argv = ["--config", str(REPO / "configs" / "shapes.yaml"), "--prompts_file", str(prompts_file),
            "--metadata_file", str(metadata_file), "--outdir", str(outdir), "--eval_num", "2", "--search_num", "3",
            "--batch_size", "6", "--reward_model", "parm", "--generation_timesteps", "3",
            f"generation.weights={tiny_weights}", "run.evaluate=false", "reward.backend=fake"]
    assert runner.main(argv + ["reward_checkpoints.parm=fake-parm"]) == 0
    for prompt in range(2):
        for sample in range(2):
            assert (outdir / f"{prompt:05d}" / "samples" / f"{sample:04d}.png").is_file()
            trace = [json.loads(line) for line in
                     (outdir / f"{prompt:05d}" / "trace" / f"{sample:04d}.jsonl").read_text().splitlines()]
            assert [t["candidate"] for t in trace] == [0, 1, 2] and sum(t["chosen"] for t in trace) == 1
            assert all(t["seed"] == [0, prompt, sample, t["candidate"]] and "clarity" in t for t in trace)
            assert all(1 <= t["generator_forwards"] <= 3 and t["judge_calls"] >= 1 for t in trace)
    assert "\n  parm: fake-parm\n" in (outdir / "config.yaml").read_text()


def test_search_settings_are_checked():
    with pytest.raises(ValueError, match="search.prm_every must be at least 1, got 0"):
        load_config(None, ["search.prm_every=0"])
    with pytest.raises(ValueError, match="search.reflect_rounds must be at least 0, got -1"):
        load_config(None, ["search.reflect_rounds=-1"])
    assert load_config(None, ["search.prune=false"]).search == SearchConfig(prune=False)
