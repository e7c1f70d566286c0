"""The embedded generator behind the step-wise protocol, in both decoding orders."""
import pytest
import torch

from generation.base import run_to_end, seeded_generator
from generation.config import GenerationConfig
from generation.tiny.backend import TinyGenerator
from generation.tiny.model import TinyConfig, TinyT2I, attention_pattern

PROMPTS = ["a photo of a red circle", "a photo of two stars", "a photo of a star left of a cross"]


def make(weights, order, **overrides):
    return TinyGenerator(GenerationConfig(backend="tiny", weights=str(weights), order=order, num_steps=6, **overrides))


def generators(n, sample=0):
    return [seeded_generator(0, i, sample, 0) for i in range(n)]


@pytest.mark.parametrize("order", ["mask", "raster"])
def test_images_do_not_depend_on_the_batch(tiny_weights, order):
    gen = make(tiny_weights, order)
    batched = run_to_end(gen, PROMPTS, generators(3))
    assert batched.shape == (3, 3, 64, 64) and batched.dtype == torch.uint8
    alone = torch.cat([run_to_end(gen, [p], [g]) for p, g in zip(PROMPTS, generators(3))])
    assert torch.equal(batched, alone)
    assert not torch.equal(batched, run_to_end(gen, PROMPTS, generators(3, sample=1)))


@pytest.mark.parametrize("order", ["mask", "raster"])
def test_select_mid_way_continues_the_same_paths(tiny_weights, order):
    gen = make(tiny_weights, order)
    full = run_to_end(gen, PROMPTS, generators(3))
    canvas = gen.step(gen.start(PROMPTS, generators(3)))
    canvas = canvas.select(torch.tensor([2, 0]))
    while canvas.step_index < gen.num_steps:
        canvas = gen.step(canvas)
    assert torch.equal(gen.finish(canvas), full[[2, 0]])


def test_raster_steps_are_blocks_of_rows_and_previews_fill_in(tiny_weights):
    gen = make(tiny_weights, "raster", rows_per_step=2)
    assert gen.num_steps == 4
    canvas = gen.start(PROMPTS[:1], generators(1))
    blank = gen.preview(canvas)
    canvas = gen.step(canvas)
    assert (canvas.tokens[0, :16] >= 0).all() and (canvas.tokens[0, 16:] < 0).all()
    after = gen.preview(canvas)
    assert torch.equal(after[..., 16:, :], blank[..., 16:, :])  # undecoded rows stay blank


def test_raster_kv_cache_matches_full_recompute(tiny_weights):
    model = TinyT2I.load(tiny_weights / "generator")
    text = torch.randint(1, 30, (2, model.cfg.max_text_len))
    codes = torch.randint(0, model.cfg.codebook_size, (2, 5))
    boi = torch.full((2, 1), model.cfg.boi_id)
    full = model(text, torch.cat([boi, codes, torch.zeros(2, 64 - 6, dtype=torch.long)], 1), "raster")
    logits, caches = model.raster_prefill(text)
    torch.testing.assert_close(logits, full[:, 0], rtol=1e-4, atol=1e-5)
    for slot in range(1, 6):
        logits = model.raster_next(codes[:, slot - 1], slot, caches)
        torch.testing.assert_close(logits, full[:, slot], rtol=1e-4, atol=1e-5)


def test_attention_patterns():
    cfg = TinyConfig(max_text_len=2, num_image_tokens=3)
    raster, mask = attention_pattern(cfg, "raster"), attention_pattern(cfg, "mask")
    assert not raster[:3, 3:].any() and not mask[:3, 3:].any()  # the prefix never sees the image
    assert raster[3:, 3:].tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert mask[3:].all()


def test_errors_name_the_problem(tiny_weights, tmp_path):
    with pytest.raises(ValueError, match="train it"):
        make(tmp_path, "mask")
    with pytest.raises(ValueError, match="order"):
        make(tiny_weights, "diagonal")
    with pytest.raises(ValueError, match="rows_per_step"):
        make(tiny_weights, "raster", rows_per_step=3)
    gen = make(tiny_weights, "mask")
    with pytest.raises(ValueError, match="outside the shapes world"):
        gen.start(["a photo of a dog"], generators(1))
    with pytest.raises(ValueError, match="steps"):
        gen.finish(gen.start(PROMPTS[:1], generators(1)))
