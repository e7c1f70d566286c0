"""PARM++ self-correction (``restart`` / ``final_tokens``, generation/refine.py) on the Show-o and Janus
backends, with the tiny random checkpoints of tests/showo_fixtures.py and tests/janus_fixtures.py.

Mask order (Show-o): a restart is the state mask-predict decoding would be in with the kept codes
committed, so restarting from a real mid-run canvas and continuing with the same random streams must
give the same tokens. Raster order (Janus): the kept rows are replayed into the KV cache exactly as
``step`` feeds them, so a restart at block k continued with the streams the original run had at
block k reproduces the original image.
"""
import pytest
import torch

from generation import refine
from generation.base import clone_generators
from janus_fixtures import PROMPTS as JANUS_PROMPTS
from janus_fixtures import generators, make, make_tiny_janus
from policy_checks import check_policies, check_reflection_rounds
from showo_fixtures import checkpoint  # noqa: F401  (fixture: the tiny Show-o checkpoint)
from showo_fixtures import CODEBOOK, NUM_TOKENS, make_generator, run, seeds

SHOWO_PROMPTS = ["a red cat", "two blue dog"]
MASK = CODEBOOK  # Show-o's mask_code (16): one past the last code
JANUS_N = 16  # 4x4 codes


def finish_decoding(gen, canvas):
    while canvas.step_index < gen.num_steps:
        canvas = gen.step(canvas)
    return canvas


# -- Show-o: mask order ----------------------------------------------------------------------------
def test_showo_restart_keeps_the_unflagged_codes(checkpoint):
    gen = make_generator(checkpoint)
    done = run(gen, SHOWO_PROMPTS, seeds(0, 1))
    flagged = torch.zeros(2, NUM_TOKENS, dtype=torch.bool)
    flagged[0, [1, 5, 9]] = True
    flagged[1, 3:11] = True  # 8 flagged: step 2 starts with floor(16 cos(pi/4)) = 11 >= 8 unknown, step 3 with 6
    canvas = gen.restart(SHOWO_PROMPTS, done.sampled, flagged, seeds(7, 8))
    assert canvas.step_index == 2
    assert torch.equal(canvas.tokens, torch.where(flagged, MASK, done.sampled))
    assert canvas.temperature == 0.375  # showo schedule from 1.0: * (1 - 1/4) after step 0, * (1 - 2/4) after step 1
    before = gen.num_forwards
    canvas = finish_decoding(gen, canvas)
    assert gen.num_forwards - before == 2 * 2  # steps 2 and 3, one forward per candidate each
    final = gen.final_tokens(canvas)
    assert torch.equal(final[~flagged], done.sampled[~flagged])
    assert not (final == MASK).any()
    assert not torch.equal(final[flagged], done.sampled[flagged])  # new streams: the flagged codes changed
    assert torch.equal(gen.finish(canvas), gen.decode(final))


def test_showo_restart_from_a_mid_run_state_continues_it_exactly(checkpoint):
    gen = make_generator(checkpoint)
    mid = gen.step(gen.step(gen.start(SHOWO_PROMPTS, seeds(3, 4))))
    unknown = mid.tokens == MASK
    assert unknown.sum(-1).tolist() == [11, 11]  # floor(16 cos(pi/4)) re-masked after step 1
    streams = clone_generators(mid.generators, [0, 1])
    canvas = gen.restart(SHOWO_PROMPTS, mid.tokens.clamp(max=MASK - 1), unknown, streams)
    assert (canvas.step_index, canvas.temperature) == (mid.step_index, mid.temperature)
    assert torch.equal(canvas.tokens, mid.tokens)
    assert torch.equal(finish_decoding(gen, canvas).sampled, finish_decoding(gen, mid).sampled)


def test_showo_restart_of_every_code_is_a_fresh_decode(checkpoint):
    gen = make_generator(checkpoint)
    fresh = run(gen, SHOWO_PROMPTS, seeds(5, 6))
    anything = torch.randint(0, MASK, (2, NUM_TOKENS), generator=torch.Generator().manual_seed(0))
    canvas = gen.restart(SHOWO_PROMPTS, anything, torch.ones(2, NUM_TOKENS, dtype=torch.bool), seeds(5, 6))
    assert (canvas.step_index, canvas.temperature) == (0, 1.0) and (canvas.tokens == MASK).all()
    canvas = finish_decoding(gen, canvas)
    assert torch.equal(canvas.sampled, fresh.sampled) and torch.equal(canvas.tokens, fresh.tokens)


@pytest.mark.parametrize("schedule, expected", [
    ("showo", 2.0 * 0.75 * 0.5 * 0.25),  # compounding t * (1 - (s+1)/4) over steps 0, 1, 2
    ("maskgit", 2.0 * (1 - 3 / 4)),  # t0 * (1 - ratio) of step 2
    ("upstream", 2.0 * 0.75 * 0.5 * 0.25),  # a prompt with no finished image yet starts at t0
])
def test_showo_restart_anneals_the_temperature_like_the_schedule(checkpoint, schedule, expected):
    gen = make_generator(checkpoint, temperature_schedule=schedule, temperature=2.0)
    one = torch.zeros(1, NUM_TOKENS, dtype=torch.bool)
    one[0, 4] = True  # 1 flagged: resume at the last step, 3
    codes = torch.zeros(1, NUM_TOKENS, dtype=torch.long)
    canvas = gen.restart(["a red cat"], codes, one, seeds(0))
    assert canvas.step_index == 3 and canvas.temperature == pytest.approx(expected, abs=1e-12)
    stepped = gen.step(gen.step(gen.step(gen.start(["a red cat"], seeds(0)))))
    assert canvas.temperature == stepped.temperature


def test_showo_upstream_restart_starts_from_the_carried_temperature(checkpoint):
    gen = make_generator(checkpoint, temperature_schedule="upstream", temperature=2.0)
    done = run(gen, ["a red cat"], seeds(0))  # the last step anneals by (1 - 4/4): 0 is carried
    one = torch.zeros(1, NUM_TOKENS, dtype=torch.bool)
    one[0, 0] = True
    assert gen.restart(["a red cat"], done.sampled, one, seeds(1)).temperature == 0.0
    assert gen.restart(["two blue dog"], done.sampled, one, seeds(1)).temperature == pytest.approx(0.1875)


def test_showo_restart_rejects_bad_input(checkpoint):
    gen = make_generator(checkpoint)
    codes = torch.zeros(2, NUM_TOKENS, dtype=torch.long)
    flags = torch.ones(2, NUM_TOKENS, dtype=torch.bool)
    with pytest.raises(ValueError, match="regenerate must be bool"):
        gen.restart(SHOWO_PROMPTS, codes, flags.long(), seeds(0, 1))
    with pytest.raises(ValueError, match="regenerate must be bool"):
        gen.restart(SHOWO_PROMPTS, codes, flags[:, :8], seeds(0, 1))
    with pytest.raises(ValueError, match="at least one"):
        gen.restart(SHOWO_PROMPTS, codes, flags & torch.tensor([[True], [False]]), seeds(0, 1))
    with pytest.raises(ValueError, match=r"tokens must be long \[2, 16\]"):
        gen.restart(SHOWO_PROMPTS, codes[:, :8], flags[:, :8], seeds(0, 1))
    with pytest.raises(ValueError, match="ran 1 of 4"):
        gen.final_tokens(gen.step(gen.start(SHOWO_PROMPTS, seeds(0, 1))))


def test_parm_plus_plus_corrects_on_showo(checkpoint):
    gen = make_generator(checkpoint)
    check_policies(gen, NUM_TOKENS, names=("parm++",))
    region = torch.arange(NUM_TOKENS) >= NUM_TOKENS // 2
    for record in check_reflection_rounds(gen, region):
        # 4 decoding steps, then per round 8 flagged codes resume at step 2: 2 forwards, 3 rounds.
        assert record.generator_forwards == 4 + 3 * 2


def test_refine_defers_to_the_showo_methods(checkpoint):
    gen = make_generator(checkpoint)
    done = run(gen, SHOWO_PROMPTS[:1], seeds(0))
    flagged = torch.zeros(1, NUM_TOKENS, dtype=torch.bool)
    flagged[0, :3] = True
    images, codes = refine.regenerate(gen, SHOWO_PROMPTS[:1], gen.final_tokens(done), flagged, seeds(2))
    assert torch.equal(codes[0, 3:], done.sampled[0, 3:]) and torch.equal(images, gen.decode(codes))


# -- Janus: raster order ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def janus_weights(tmp_path_factory):
    return make_tiny_janus(tmp_path_factory.mktemp("tiny_janus_refine"))


def test_janus_restart_at_a_block_replays_the_original_decode(janus_weights):
    gen = make(janus_weights, rows_per_step=1)  # a step is one row of 4 codes
    canvas = gen.step(gen.step(gen.start(JANUS_PROMPTS, generators(3))))
    at_block_2 = canvas
    streams = clone_generators(canvas.generators, [0, 1, 2])  # where the streams stood after 2 steps
    done = finish_decoding(gen, canvas)
    flagged = torch.zeros(3, JANUS_N, dtype=torch.bool)
    flagged[0, 9] = flagged[1, 15] = flagged[2, 10] = True  # earliest: code 9, in row 2 -> resume at step 2
    before = gen.num_forwards
    restarted = gen.restart(JANUS_PROMPTS, done.tokens, flagged, streams)
    assert gen.num_forwards - before == 3 * (1 + 8)  # prefill + one forward per kept code, per candidate
    assert restarted.step_index == 2 and torch.equal(restarted.tokens[:, :8], done.tokens[:, :8])
    assert (restarted.tokens[:, 8:] == -1).all()
    assert torch.equal(restarted.attention_mask, at_block_2.attention_mask)
    assert torch.equal(restarted.positions, at_block_2.positions)
    torch.testing.assert_close(restarted.next_logits, at_block_2.next_logits, rtol=0, atol=0)
    again = finish_decoding(gen, restarted)
    assert torch.equal(gen.final_tokens(again), done.tokens)
    assert torch.equal(gen.finish(again), gen.finish(done))


def test_janus_restart_keeps_the_rows_before_the_first_flag(janus_weights):
    gen = make(janus_weights, rows_per_step=1)
    done = finish_decoding(gen, gen.start(JANUS_PROMPTS, generators(3)))
    flagged = torch.zeros(3, JANUS_N, dtype=torch.bool)
    flagged[:, 13] = True  # row 3: the first 12 codes are kept
    again = finish_decoding(gen, gen.restart(JANUS_PROMPTS, done.tokens, flagged, generators(3, sample=1)))
    assert torch.equal(again.tokens[:, :12], done.tokens[:, :12])
    assert not torch.equal(again.tokens[:, 12:], done.tokens[:, 12:])  # other streams: the last row changed


def test_janus_restart_from_the_first_code_is_a_fresh_decode(janus_weights):
    gen = make(janus_weights)
    before = gen.num_forwards
    fresh = finish_decoding(gen, gen.start(JANUS_PROMPTS, generators(3)))
    fresh_forwards, before = gen.num_forwards - before, gen.num_forwards
    anything = torch.randint(0, 64, (3, JANUS_N), generator=torch.Generator().manual_seed(0))
    flagged = torch.zeros(3, JANUS_N, dtype=torch.bool)
    flagged[:, 0] = True
    canvas = gen.restart(JANUS_PROMPTS, anything, flagged, generators(3))
    assert canvas.step_index == 0 and (canvas.tokens == -1).all()
    canvas = finish_decoding(gen, canvas)
    assert torch.equal(canvas.tokens, fresh.tokens)
    assert gen.num_forwards - before == fresh_forwards == 3 * 16  # prefill + 15 codes fed, per candidate


def test_janus_restart_rejects_bad_input(janus_weights):
    gen = make(janus_weights)
    codes = torch.zeros(3, JANUS_N, dtype=torch.long)
    flags = torch.ones(3, JANUS_N, dtype=torch.bool)
    with pytest.raises(ValueError, match="regenerate must be bool"):
        gen.restart(JANUS_PROMPTS, codes, flags.int(), generators(3))
    with pytest.raises(ValueError, match="regenerate must be bool"):
        gen.restart(JANUS_PROMPTS, codes, flags[:, :4], generators(3))
    with pytest.raises(ValueError, match="at least one"):
        gen.restart(JANUS_PROMPTS, codes, flags & torch.tensor([[True], [True], [False]]), generators(3))
    with pytest.raises(ValueError, match=r"tokens must be long \[3, 16\]"):
        gen.restart(JANUS_PROMPTS, codes[:2], flags[:2], generators(3))
    with pytest.raises(ValueError, match="ran 0 of 2"):
        gen.final_tokens(gen.start(JANUS_PROMPTS, generators(3)))


def test_parm_plus_plus_corrects_on_janus(janus_weights):
    gen = make(janus_weights)  # 2 rows per step
    check_policies(gen, JANUS_N, names=("parm++",))
    region = torch.arange(JANUS_N) >= JANUS_N // 2
    for record in check_reflection_rounds(gen, region):
        # 16 forwards per full decode (prefill + 15 codes); a round restarts at step 1: prefill, 8 kept
        # codes replayed, then codes 8..14 fed: 16 again, 3 rounds.
        assert record.generator_forwards == 16 + 3 * 16

