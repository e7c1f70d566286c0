"""Shared checks: every search policy runs on a backend, and PARM++ corrects on it (used by the
tiny-model tests of each backend)."""
from __future__ import annotations

import torch

from config import SearchConfig
from reward_models.verifiers import REFLECT_KIND, Reflection
from policies import POLICIES
from search import ImageRequest, Selection

REQUESTS = [ImageRequest("a red cat", 0, 0), ImageRequest("two dogs", 1, 0)]
NUM_CANDIDATES = 3


class BrightnessJudge:
    """P(yes) = mean brightness for every question; reflects by flagging the first half of the tokens."""

    def __init__(self, num_tokens: int):
        self.num_tokens = num_tokens

    def yes_no_probs(self, images, questions):
        p_yes = images.float().mean((1, 2, 3)) / 255
        return p_yes, 1 - p_yes

    def reflect(self, images, prompts):
        mask = torch.arange(self.num_tokens) < self.num_tokens // 2
        return [Reflection("the first half is wrong", mask) for _ in prompts]


class CriticalJudge(BrightnessJudge):
    """Like ``BrightnessJudge``, but the reflection verdict is always "no" and every critique flags
    ``region``, so parm++ runs all its rounds. The verdict is the ``orm`` question, so PARM's final
    scores are all 0 too and best-of-N' keeps the lowest surviving candidate."""

    def __init__(self, region: torch.Tensor):
        super().__init__(len(region))
        self.region = region

    def yes_no_probs(self, images, questions):
        p_yes, p_no = super().yes_no_probs(images, questions)
        reflecting = torch.tensor([q.kind == REFLECT_KIND for q in questions], device=p_yes.device)
        return p_yes.masked_fill(reflecting, 0.0), p_no.masked_fill(reflecting, 1.0)

    def reflect(self, images, prompts):
        return [Reflection("this region is wrong", self.region.clone()) for _ in prompts]


def run_policy(generator, name: str, judge) -> list[Selection]:
    """Policy ``name`` (N=3) on two requests with ``judge``; checks the common contract."""
    selections = POLICIES[name](judge, SearchConfig(), NUM_CANDIDATES)(generator, REQUESTS, 0)
    assert len(selections) == len(REQUESTS), name
    for selection in selections:
        size = generator.image_size
        assert selection.image.dtype == torch.uint8 and tuple(selection.image.shape) == (3, size, size), name
        assert [r.candidate for r in selection.candidates] == list(range(NUM_CANDIDATES)), name
        assert sum(r.chosen for r in selection.candidates) == 1, name
    return selections


def check_policies(generator, num_tokens: int, names=("orm_zs", "prm", "parm", "parm++")) -> dict[str, list]:
    """Run each policy on two requests with a ``BrightnessJudge``; returns the selections."""
    return {name: run_policy(generator, name, BrightnessJudge(num_tokens)) for name in names}


SCALING = ("lookahead", "progressive", "confidence", "confidence_orm")
"""The policies of scaling_policies.py."""


def check_scaling_policies(generator, num_tokens: int, requests=REQUESTS) -> dict[str, list]:
    """Every policy of scaling_policies.py on two requests (N=3, ``search.blocks=2``); the confidence
    policies stop paths at the block end, and every record counts forwards."""
    selections = {}
    for name in SCALING:
        judge = None if POLICIES[name].judge_source is None else BrightnessJudge(num_tokens)
        policy = POLICIES[name](judge, SearchConfig(blocks=2), NUM_CANDIDATES)
        selections[name] = policy(generator, requests, 0)
        for selection in selections[name]:
            assert sum(r.chosen for r in selection.candidates) == 1, name
            assert all(r.generator_forwards > 0 for r in selection.candidates), name
            if name.startswith("confidence"):  # ceil(0.5 * 3) = 2 of 3 paths go on after the block end
                assert sum(r.prune_step is not None for r in selection.candidates) == 1, name
    return selections


def check_lookahead(generator, requests=REQUESTS) -> None:
    """``lookahead`` leaves the canvas as it was (its next steps are unchanged) and, after the last
    step, shows the final image; ``token_stats`` counts every decided token once."""
    from generation.base import seeded_generator

    prompts = [r.prompt for r in requests]

    def streams():
        return [seeded_generator(0, r.prompt_index, r.sample_index, 0) for r in requests]

    plain, looked = generator.start(prompts, streams()), generator.start(prompts, streams())
    for _ in range(generator.num_steps):
        plain, looked = generator.step(plain), generator.step(looked)
        images = generator.lookahead(looked)
        assert images.dtype == torch.uint8 and images.shape == (len(prompts), 3, generator.image_size,
                                                                generator.image_size)
    assert torch.equal(generator.finish(plain), generator.finish(looked))
    assert torch.equal(generator.lookahead(looked), generator.finish(looked))
    assert torch.equal(plain.token_stats, looked.token_stats)
    assert plain.token_stats[:, 3].tolist() == [float(plain.tokens.shape[1])] * len(prompts)


def check_reflection_rounds(generator, region: torch.Tensor) -> list[dict]:
    """parm++ with a ``CriticalJudge`` flagging ``region`` (``bool [N]``): the chosen candidate of each
    request records ``search.reflect_rounds`` rounds, each critiquing ``region`` and judged "no".
    Returns those chosen records."""
    rounds = SearchConfig().reflect_rounds
    chosen = []
    for selection in run_policy(generator, "parm++", CriticalJudge(region)):
        [record] = [r for r in selection.candidates if r.chosen]
        assert (record.reflect_p_yes, record.reflect_p_no) == (0.0, 1.0)
        assert [(r.round, r.critique, r.region_size, r.verdict) for r in record.rounds] == \
            [(k, "this region is wrong", int(region.sum()), "no") for k in range(1, rounds + 1)]
        chosen.append(record)
    return chosen
