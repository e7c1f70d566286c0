"""Contracts of scaling_policies.py (lookahead, progressive, confidence, confidence_orm) and of the two
generator capabilities they use (``Generator.lookahead``, ``Canvas.token_stats``), on the tiny random
shapes-world generator in both orders and fake judges; the real backends run the same checks in their
own tests (tests/policy_checks.py)."""
from __future__ import annotations

import json
from dataclasses import asdict, replace
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main as runner
import reward_models
import policies
import scaling_policies
from config import load_config
from generation.base import decision_stats, run_to_end, seeded_generator
from generation.config import GenerationConfig
from generation.tiny.backend import TinyGenerator
from policies import POLICIES
from tests.policy_checks import SCALING, check_lookahead, check_scaling_policies
from search_helpers import REQUESTS, SEED, STEPS, BrightnessJudge, brightness, make_config, make_generator, \
    row_forwards
from conftest import write_shapes_suite

REPO = Path(__file__).resolve().parents[1]


def run_policy(name, generator, requests, num_candidates=4, judge=None, **search_settings):
    judge = None if POLICIES[name].judge_source is None else judge or BrightnessJudge()  # as policies.policy_judge
    cfg = make_config(num_candidates, **search_settings)
    return POLICIES[name](judge, cfg.search, cfg.run.search_num)(generator, requests, SEED)


# ----------------------------------------------------------------------------
# The generator capabilities

def test_decision_stats_by_hand():
    guided = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # p = (1/2, 1/2) and (3/4, 1/4)
    cond = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    uncond = torch.zeros(2, 2)
    codes = torch.tensor([1, 0])
    stats = decision_stats(guided, cond, uncond, codes)
    entropy_34 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    expected = torch.tensor([[1.0, 0.0, math.log(1.5), 1.0], [entropy_34, 0.5, 0.0, 1.0]])
    assert torch.allclose(stats, expected, atol=1e-6)
    # [B, N, K]: only the decided positions count; no guidance rows: no gap.
    both = decision_stats(guided[None].repeat(2, 1, 1), None, None, codes[None].repeat(2, 1),
                          torch.tensor([[True, True], [False, True]]))
    assert torch.allclose(both, torch.stack([expected[0] + expected[1], expected[1]]) * torch.tensor([1, 1, 0, 1]),
                          atol=1e-6)


@pytest.mark.parametrize("order", ["mask", "raster"])
def test_lookahead_leaves_the_canvas_and_token_stats_count_every_token(tiny_weights, order):
    check_lookahead(make_generator(tiny_weights, order), REQUESTS)


def test_raster_lookahead_is_greedy_decoding_and_counts_its_forwards(tiny_weights):
    generator = make_generator(tiny_weights, "raster")
    prompts = [r.prompt for r in REQUESTS]
    canvas = generator.start(prompts, [seeded_generator(SEED, 0, 0, c) for c in range(2)])
    before = generator.num_forwards
    completed = generator.lookahead(canvas)
    assert generator.num_forwards - before == len(prompts) * 63  # every code fed back but the last
    greedy = TinyGenerator(GenerationConfig(backend="tiny", weights=str(tiny_weights), order="raster",
                                            rows_per_step=2, guidance_scale=2.0, temperature=0.0))
    assert torch.equal(completed, run_to_end(greedy, prompts, [seeded_generator(SEED, 0, 0, c) for c in range(2)]))


def test_mask_lookahead_is_the_preview_and_free(tiny_weights):
    generator = make_generator(tiny_weights, "mask")
    canvas = generator.step(generator.start(["a photo of a red circle"], [seeded_generator(SEED, 0, 0, 0)]))
    before = generator.num_forwards
    assert torch.equal(generator.lookahead(canvas), generator.preview(canvas)) and generator.num_forwards == before


# ----------------------------------------------------------------------------
# The policies

@pytest.mark.parametrize("order", ["mask", "raster"])
def test_every_scaling_policy_keeps_the_contract(tiny_weights, order):
    check_scaling_policies(make_generator(tiny_weights, order), 64, REQUESTS)


def test_block_ends():
    assert scaling_policies.block_ends(12, 4) == [3, 6, 9]
    assert scaling_policies.block_ends(8, 3) == [2, 5]
    assert scaling_policies.block_ends(4, 1) == []
    with pytest.raises(ValueError, match="search.blocks=5 is more than the generator's 4 decoding steps"):
        scaling_policies.block_ends(4, 5)


@pytest.mark.parametrize("order", ["mask", "raster"])
def test_progressive_keeps_the_best_lookaheads_as_anchors(tiny_weights, order):
    generator = make_generator(tiny_weights, order)
    judge = BrightnessJudge()
    selections = run_policy("progressive", generator, REQUESTS, num_candidates=5, judge=judge, blocks=2, anchors=2)
    lookaheads = [image for kind, image in judge.asked if kind == "orm"][:10]  # the 10 rows at step 2
    for request, selection in enumerate(selections):
        records = selection.candidates
        assert all(r.judged_steps == [STEPS // 2] for r in records)
        scores = [r.step_scores[0] for r in records]
        assert scores == pytest.approx(brightness(torch.stack(lookaheads[5 * request:5 * request + 5])).tolist())
        ranking = sorted(range(5), key=lambda c: (-scores[c], c))
        anchors = ranking[:2]
        assert [c for c in range(5) if records[c].anchor[0]] == sorted(anchors)
        others = [c for c in range(5) if c not in anchors]
        assert [records[c].source[0] for c in range(5)] == \
            [c if c in anchors else anchors[others.index(c) % 2] for c in range(5)]
        finals = [r.final_score for r in records]
        assert records[max(range(5), key=lambda c: (finals[c], -c))].chosen
        assert [r.generator_forwards for r in records] == [row_forwards(order, STEPS)] * 5 if order == "mask" \
            else all(r.generator_forwards > row_forwards(order, STEPS) for r in records)  # + completions
        assert [r.judge_calls for r in records] == [2] * 5  # one lookahead, one final


@pytest.mark.parametrize("order", ["mask", "raster"])
def test_an_anchor_continues_its_own_path(tiny_weights, order):
    """With one block nothing is judged before the end: progressive is best-of-N by the same judge."""
    generator = make_generator(tiny_weights, order)
    one_block = run_policy("progressive", generator, REQUESTS, blocks=1)
    best_of_n = run_policy("orm_zs", generator, REQUESTS)
    for a, b in zip(one_block, best_of_n):
        assert torch.equal(a.image, b.image)
    # Anchors keep their random stream: with 4 anchors of 4 rows, every row continues its own path.
    everyone = run_policy("progressive", generator, REQUESTS, blocks=2, anchors=4)
    for a, b in zip(everyone, best_of_n):
        assert torch.equal(a.image, b.image)
        assert all(r.anchor == [True] and r.source == [r.candidate] for r in a.candidates)


def test_lookahead_decides_every_k_steps_with_one_anchor(tiny_weights):
    generator = make_generator(tiny_weights, "raster")
    for every, steps in [(1, [1, 2, 3]), (2, [2])]:
        for selection in run_policy("lookahead", generator, REQUESTS, lookahead_every=every):
            assert all(r.judged_steps == steps and sum(r.anchor) <= len(steps) for r in selection.candidates)
            assert [sum(r.anchor[k] for r in selection.candidates) for k in range(len(steps))] == [1] * len(steps)


@pytest.mark.parametrize("order", ["mask", "raster"])
def test_confidence_stops_the_least_confident_paths(tiny_weights, order):
    generator = make_generator(tiny_weights, order)
    weights = [1.0, 0.5, 2.0]
    for selection in run_policy("confidence", generator, REQUESTS, num_candidates=5, blocks=4,
                                confidence_weights=weights):
        records = selection.candidates
        # 5 -> ceil(2.5) = 3 after step 1 -> 2 after step 2 -> 1 after step 3
        assert sorted((r.prune_step for r in records), key=str) == [1, 1, 2, 3, None]
        for step, alive in [(1, 5), (2, 3), (3, 2)]:
            here = [r for r in records if step in r.judged_steps]
            assert len(here) == alive
            index = here[0].judged_steps.index(step)
            ranking = sorted(here, key=lambda r: (-r.confidence[index], r.candidate))
            assert all(r.prune_step == step for r in ranking[math.ceil(alive / 2):])
        [survivor] = [r for r in records if r.prune_step is None]
        assert survivor.chosen and survivor.judge_calls == 0
        assert survivor.confidence[-1] == pytest.approx(
            -weights[0] * survivor.entropy + weights[1] * survivor.margin + weights[2] * survivor.guidance_gap)
        pruned = {r.prune_step: r.generator_forwards for r in records if r.prune_step is not None}
        assert pruned[1] < pruned[2] < pruned[3] < survivor.generator_forwards == row_forwards(order, STEPS)


def test_confidence_orm_picks_among_survivors_by_the_judge(tiny_weights):
    generator = make_generator(tiny_weights, "mask")
    by_confidence = run_policy("confidence", generator, REQUESTS, num_candidates=4, blocks=2)
    by_orm = run_policy("confidence_orm", generator, REQUESTS, num_candidates=4, blocks=2)
    for a, b in zip(by_confidence, by_orm):
        assert [r.prune_step for r in a.candidates] == [r.prune_step for r in b.candidates]
        survivors = [r for r in b.candidates if r.prune_step is None]
        assert len(survivors) == 2 and all(r.judge_calls == 1 for r in survivors)
        best = max(survivors, key=lambda r: (r.final_score, -r.candidate))
        assert best.chosen and b.image.float().mean().item() / 255 == pytest.approx(best.final_score)


@pytest.mark.parametrize("order", ["mask", "raster"])
@pytest.mark.parametrize("name", SCALING)
def test_selection_does_not_depend_on_the_batch(tiny_weights, order, name):
    generator = make_generator(tiny_weights, order)
    together = run_policy(name, generator, REQUESTS, num_candidates=3, blocks=2)
    alone = [run_policy(name, generator, [request], num_candidates=3, blocks=2)[0] for request in REQUESTS]
    for a, b in zip(together, alone):
        assert torch.equal(a.image, b.image)
        assert [exact_fields(r) for r in a.candidates] == [exact_fields(r) for r in b.candidates]
        # The confidence statistics come from the generator's logits, computed for every request's rows
        # in one forward: a GEMM's blocking follows the batch size (and the thread count), so they agree
        # to float rounding, not bit for bit. Judge scores are asked per request and agree exactly.
        for x, y in zip(a.candidates, b.candidates):
            assert float_fields(x) == pytest.approx(float_fields(y), rel=1e-4, abs=1e-6)


def exact_fields(record) -> dict:
    return {k: v for k, v in asdict(record).items() if k not in GENERATOR_FLOATS}


def float_fields(record) -> list[float]:
    values = [asdict(record).get(k) for k in GENERATOR_FLOATS]
    return [x for v in values if v is not None for x in (v if isinstance(v, list) else [v])]


GENERATOR_FLOATS = ("confidence", "entropy", "margin", "guidance_gap")


def test_presets_and_registry_name_the_new_policies(monkeypatch):
    assert set(scaling_policies.SCALING_POLICIES) == set(SCALING) and set(SCALING) <= set(POLICIES)
    for preset in ("configs/shapes.yaml", "configs/shapes_raster.yaml", "config.yaml", "configs/janus.yaml",
                   "configs/llamagen.yaml"):
        cfg = load_config(REPO / preset)
        assert {"lookahead", "progressive", "confidence_orm"} <= set(cfg.reward_checkpoints), preset
    monkeypatch.setitem(reward_models.JUDGES, "fake", "search_helpers:BrightnessJudge")
    cfg = load_config(None, ["reward.backend=fake", "reward_checkpoints.progressive=ckpts/p", "run.search_num=3"])
    named = lambda name: replace(cfg, run=replace(cfg.run, reward_model=name))  # noqa: E731
    assert policies.build_policy(named("progressive"), "cpu").judge.checkpoint == "ckpts/p"
    assert policies.build_policy(named("confidence"), "cpu").judge is None  # no judge to load
    with pytest.raises(ValueError, match="no reward_checkpoints entry 'lookahead'"):
        policies.policy_judge(named("lookahead"), "cpu")


def test_search_settings_are_checked():
    for override, message in [("search.blocks=0", "search.blocks must be at least 1"),
                              ("search.anchors=0", "search.anchors must be at least 1"),
                              ("search.lookahead_every=0", "search.lookahead_every must be at least 1"),
                              ("search.confidence_keep=1.5", "search.confidence_keep must be greater than 0 and at most 1"),
                              ("search.confidence_weights=[1,2]", "search.confidence_weights takes 3 finite weights")]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            load_config(None, [override])


# ----------------------------------------------------------------------------
# Through the runner: two ranks write the same files as one; a killed run resumes

def _command(outdir: Path, weights: Path, suite: tuple[Path, Path], policy: str) -> list[str]:
    return ["--config", str(REPO / "configs" / "shapes.yaml"), "--prompts_file", str(suite[0]),
            "--metadata_file", str(suite[1]), "--outdir", str(outdir), "--eval_num", "2", "--search_num", "3",
            "--batch_size", "6", "--reward_model", policy, "--generation_timesteps", "4", "search.blocks=2",
            f"generation.weights={weights}", "run.evaluate=false"]


def _generated(outdir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(outdir)): p.read_bytes() for p in sorted(outdir.rglob("*"))
            if p.is_file() and p.relative_to(outdir).parts[0].isdigit()}


def test_runner_two_ranks_and_resume(tiny_weights, tmp_path):
    _, prompts_file, metadata_file = write_shapes_suite(tmp_path, slice(3))
    suite = (prompts_file, metadata_file)
    one = tmp_path / "one"
    assert runner.main(_command(one, tiny_weights, suite, "progressive")) == 0
    traces = [json.loads(line) for line in (one / "00001" / "trace" / "0001.jsonl").read_text().splitlines()]
    assert [t["seed"] for t in traces] == [[0, 1, 1, c] for c in range(3)]
    assert all(t["generator_forwards"] == 4 and t["judge_calls"] == 2 for t in traces)
    # A killed run: one image and its trace missing; the rerun writes exactly the same bytes.
    reference = _generated(one)
    (one / "00002" / "samples" / "0000.png").unlink()
    (one / "00002" / "trace" / "0000.jsonl").unlink()
    assert runner.main(_command(one, tiny_weights, suite, "progressive")) == 0
    assert _generated(one) == reference
    two = tmp_path / "two"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "main.py"]
    result = subprocess.run(launcher + _command(two, tiny_weights, suite, "progressive"), cwd=REPO,
                            capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert _generated(two) == reference
