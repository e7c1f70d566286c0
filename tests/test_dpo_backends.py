"""dpo/train.py on the real backends (dpo/backends.py): tiny random Show-o, Janus-Pro and LlamaGen checkpoints
in their official layouts (the builders of tests/showo_fixtures.py, janus_fixtures.py, llamagen_fixtures.py), trained a
few steps in one process, then loaded back through each backend's own generator loader."""
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from dpo.likelihood import MaskDraw
from dpo.train import build_backend, main, parse_args, train
from dpo_fixtures import PROMPTS, janus_case, llamagen_case, showo_case, write_pairs
from janus_fixtures import weights as janus_weights  # noqa: F401  (fixture: tiny Janus-Pro folder)
from llamagen_fixtures import weights as llamagen_weights  # noqa: F401  (fixture: tiny LlamaGen GPT, VQ, T5)
from showo_fixtures import checkpoint  # noqa: F401  (fixture: tiny Show-o + MAGVIT-v2 folders)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["showo", "janus", "llamagen"])
def case(request, tmp_path):
    if request.param == "showo":
        return showo_case(request.getfixturevalue("checkpoint"), tmp_path)
    if request.param == "janus":
        return janus_case(request.getfixturevalue("janus_weights"), tmp_path)
    return llamagen_case(request.getfixturevalue("llamagen_weights"), tmp_path)


def save_pngs(images: torch.Tensor, folder: Path) -> list[str]:
    paths = [str(folder / f"{i}.png") for i in range(len(images))]
    for path, image in zip(paths, images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    return paths


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def files(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def test_dpo_trains_a_real_backend_and_saves_it_in_its_own_format(case):
    cfg, load, trains, outside = case
    backend = build_backend(cfg)
    summary = train(cfg, backend=backend)
    out = Path(cfg.out)
    assert summary["steps"] == 3 and summary["pairs"] == 4 and summary["ranks_in_sync"]
    log = read_log(out)
    assert [r["step"] for r in log] == [0, 1, 2] and all(math.isfinite(r["loss"]) for r in log)
    assert log[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at step 0: -log sigmoid(0)
    assert log[-1]["loss"] < log[0]["loss"]
    assert not (out / "checkpoint").exists()

    trained = {k: v.detach().clone() for k, v in backend.generator.model.state_dict().items()}
    loaded = load(cfg.out)  # the backend's own loader reads the output folder (LlamaGen: finds t2i_dpo.pt)
    assert loaded.model.state_dict().keys() == trained.keys()
    assert all(torch.equal(v, trained[k]) for k, v in loaded.model.state_dict().items())

    start = load(cfg.init)
    init = start.model.state_dict()
    requires_grad = {n: p.requires_grad for n, p in backend.generator.model.named_parameters()}
    assert any(requires_grad.values()) and all(flag == trains(n) for n, flag in requires_grad.items())
    for name, flag in requires_grad.items():  # every trainable tensor moved, no frozen one did
        assert torch.equal(trained[name], init[name]) != flag, name
    for name, _ in backend.generator.model.named_buffers():  # e.g. LlamaGen's uncond_embedding
        if name in trained:  # persistent ones
            assert torch.equal(trained[name], init[name]), name
    for attribute in outside:  # tokenizers and text encoders outside the trained model
        module = getattr(backend.generator, attribute)
        assert not any(p.requires_grad for p in module.parameters())
        fresh = getattr(start, attribute).state_dict()
        assert all(torch.equal(v, fresh[k]) for k, v in module.state_dict().items()), attribute

    # a rerun of the same command finds the finished run and touches nothing
    stamps = files(out)
    assert train(cfg) == summary
    assert files(out) == stamps


def test_killed_showo_run_resumes_to_the_same_weights(checkpoint, tmp_path):
    cfg, load, _, _ = showo_case(checkpoint, tmp_path)
    straight = dataclasses.replace(cfg, out=str(tmp_path / "straight"), steps=4)
    train(straight)
    resumed = dataclasses.replace(straight, out=str(tmp_path / "resumed"))
    assert train(dataclasses.replace(resumed, stop_after=3)) is None  # "killed" after step 2, checkpoint at 2
    assert (tmp_path / "resumed" / "checkpoint" / "trainer_state.json").is_file()
    assert not (tmp_path / "resumed" / "config.json").exists()
    train(resumed)
    assert [r["step"] for r in read_log(tmp_path / "resumed")] == [0, 1, 2, 3]
    a, b = (load(tmp_path / name).model.state_dict() for name in ("straight", "resumed"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_showo_pairs_may_name_images_encoded_by_magvit(checkpoint, tmp_path):
    cfg, _, _, _ = showo_case(checkpoint, tmp_path)
    backend = build_backend(cfg)
    backend.load(torch.device("cpu"))
    images = torch.randint(0, 256, (2, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    paths = save_pngs(images, tmp_path)
    tokens = list(range(16))
    pairs = backend.encode([{"prompt": "a red cat", "chosen": paths[0], "rejected": tokens, "weight": 1.0},
                            {"prompt": "a dog", "chosen": tokens, "rejected": paths[1], "weight": 2.0}])
    codes = backend.generator.encode(images)
    assert pairs.chosen.tolist() == [codes[0].tolist(), tokens]
    assert pairs.rejected.tolist() == [tokens, codes[1].tolist()]
    assert pairs.text.shape == (2, 129) and pairs.weight.tolist() == [1.0, 2.0]
    Image.fromarray(torch.zeros(16, 16, 3, dtype=torch.uint8).numpy()).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match="8x8"):
        backend.encode([{"prompt": "a", "chosen": str(tmp_path / "big.png"), "rejected": tokens, "weight": 1.0}])
    with pytest.raises(ValueError, match=r"codes in \[0, 16\)"):
        backend.encode([{"prompt": "a", "chosen": [16] * 16, "rejected": tokens, "weight": 1.0}])


def test_janus_pairs_may_name_images_encoded_by_its_vq(janus_weights, tmp_path):
    cfg, _, _, _ = janus_case(janus_weights, tmp_path)
    backend = build_backend(cfg)
    backend.load(torch.device("cpu"))
    codes = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    images = backend.generator.decode(codes)  # the generator's own 8x8 outputs
    paths = save_pngs(images, tmp_path)
    tokens = list(range(16))
    pairs = backend.encode([{"prompt": "a red cat", "chosen": paths[0], "rejected": tokens, "weight": 1.0},
                            {"prompt": "a dog", "chosen": tokens, "rejected": paths[1], "weight": 2.0}])
    encoded = backend.generator.encode(images)
    assert pairs.chosen.tolist() == [encoded[0].tolist(), tokens]
    assert pairs.rejected.tolist() == [tokens, encoded[1].tolist()]
    assert pairs.text == ["a red cat", "a dog"] and pairs.weight.tolist() == [1.0, 2.0]
    (tmp_path / "big").mkdir()
    big = save_pngs(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), tmp_path / "big")[0]
    with pytest.raises(ValueError, match="8x8"):
        backend.encode([{"prompt": "a", "chosen": big, "rejected": tokens, "weight": 1.0}])


def test_llamagen_pairs_need_token_lists(llamagen_weights, tmp_path):
    cfg, _, _, _ = llamagen_case(llamagen_weights, tmp_path)
    backend = build_backend(cfg)
    backend.load(torch.device("cpu"))
    with pytest.raises(ValueError, match="image token lists"):
        backend.encode([{"prompt": "a cup", "chosen": "x.png", "rejected": list(range(16)), "weight": 1.0}])


@pytest.mark.parametrize("name", ["janus", "llamagen"])
def test_raster_adapters_score_dropped_text_unconditionally(name, request, tmp_path):
    cfg, _, _, _ = (janus_case(request.getfixturevalue("janus_weights"), tmp_path) if name == "janus"
                    else llamagen_case(request.getfixturevalue("llamagen_weights"), tmp_path))
    backend = build_backend(cfg)
    policy, _ = backend.load(torch.device("cpu"))
    gen = torch.Generator().manual_seed(2)
    pairs = backend.encode([{"prompt": p, "chosen": torch.randint(0, 64, (16,), generator=gen).tolist(),
                             "rejected": torch.randint(0, 64, (16,), generator=gen).tolist(), "weight": 1.0}
                            for p in PROMPTS[:2]])
    drop = torch.tensor([True, False])
    with torch.no_grad():
        logp_c, logp_r, n_c, n_r = backend.pair_logprobs(policy, pairs, MaskDraw(None, drop))
        kept_c, _, _, _ = backend.pair_logprobs(policy, pairs, MaskDraw(None, torch.zeros(2, dtype=torch.bool)))
        expected_c = backend.generator.sequence_logprob(pairs.text, pairs.chosen, drop)
        expected_r = backend.generator.sequence_logprob(pairs.text, pairs.rejected, drop)
    torch.testing.assert_close(logp_c, expected_c, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logp_r, expected_r, rtol=1e-5, atol=1e-5)
    assert n_c.tolist() == n_r.tolist() == [16, 16]
    assert abs(logp_c[0] - kept_c[0]) > 1e-3  # row 0 dropped: its prompt no longer conditions it
    torch.testing.assert_close(logp_c[1], kept_c[1], rtol=1e-5, atol=1e-5)


def test_bad_settings_exit_2_with_a_message(janus_weights, tmp_path, capsys):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 16, 64)
    base = ["--pairs", str(pairs), "--out", str(tmp_path / "o"), "--backend", "janus", "--init", str(janus_weights)]
    cases = {"generation.dtype=float32": base,  # the preset's bfloat16
             "outside generation": base + ["run.seed=1"],
             "not --backend janus": base + ["--config", str(REPO / "config.yaml")],
             "unknown --backend": ["--pairs", str(pairs), "--out", str(tmp_path / "o"), "--backend", "dalle"]}
    for message, argv in cases.items():
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_command_line_takes_generation_overrides_anywhere():
    cfg = parse_args(["--backend", "llamagen", "generation.dtype=float32", "--pairs", "p.jsonl", "--out", "o",
                      "generation.tokenizer=vq.pt", "--lr", "2e-5"])
    assert (cfg.backend, cfg.pairs, cfg.out, cfg.lr) == ("llamagen", "p.jsonl", "o", 2e-5)
    assert cfg.overrides == ["generation.dtype=float32", "generation.tokenizer=vq.pt"]
    assert parse_args(["--pairs", "p", "--init", "weights/shapes", "--out", "o"]).overrides == []
