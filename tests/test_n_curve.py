"""scripts/n_curve.py: its picks at n = N are the runner's, and its outputs (JSON, plot, sheets) are written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import search
from config import load_config
from generation import build_generator
from shapes.word_tokenizer import WordTokenizer
from shapes.patch_tokenizer import PatchTokenizer
from reward_models.oracle import GenEvalOracle
from reward_models import JudgeConfig, build_judge
from reward_models.shapes_judge import JudgeNet, JudgeNetConfig, save_judge
from scripts import n_curve
from conftest import write_shapes_suite

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_weights):
    folder = tmp_path_factory.mktemp("n_curve")
    tokenizer, text = PatchTokenizer.load("weights/shapes/tokenizer"), WordTokenizer.for_shapes_world()
    torch.manual_seed(3)
    judge = JudgeNet(JudgeNetConfig(text_vocab_size=len(text), codebook_size=tokenizer.cfg.codebook_size,
                                    hidden_size=32, num_layers=1, num_heads=2))
    save_judge(folder / "judge", judge.eval(), text, tokenizer)
    records, _, _ = write_shapes_suite(folder, slice(None, None, 20))
    overrides = [f"generation.weights={tiny_weights}", "generation.num_steps=4", f"run.prompts_file={folder}/prompts.txt",
                 f"run.metadata_file={folder}/metadata.jsonl", "run.batch_size=8", "search.sampled_decisions=false"]
    overrides += [f"reward_checkpoints.{name}={folder / 'judge'}" for name in ("orm_zs", "orm_ft", "prm", "parm")]
    return folder, overrides, records


def test_parm_pick_at_full_n_is_the_pruning_policy_choice(setup):
    folder, overrides, records = setup
    cfg = load_config(REPO / "configs/shapes.yaml", overrides + ["run.search_num=6"])
    generator = build_generator(cfg.generation, "cpu")
    judge = build_judge(JudgeConfig(backend="shapes", checkpoint=str(folder / "judge")), "cpu")
    oracle = GenEvalOracle(cfg.geneval, records, "cpu")
    requests = [search.ImageRequest(r["prompt"], p, 0) for p, r in enumerate(records)]
    items = n_curve.decode_pool(cfg, generator, requests, judge, oracle, {"orm_zs": judge, "orm_ft": judge})
    pruned = search.Parm(judge, cfg.search, cfg.run.search_num)(generator, requests, cfg.run.seed)
    for item, selection in zip(items, pruned):
        chosen = [r.candidate for r in selection.candidates if r.chosen]
        assert n_curve.parm_pick(item["records"], 6) == chosen[0]
        assert torch.equal(item["finals"][chosen[0]], selection.image)
    # best-of-n for the ORMs picks the first maximum among the first n candidates
    picks = n_curve.picks(items[0], 3)
    assert picks["orm_zs"] == max(range(3), key=lambda c: (items[0]["score_orm_zs"][c], -c))
    assert picks["baseline"] == 0


def test_main_writes_curves_plot_and_sheets(setup, tmp_path):
    _, overrides, records = setup
    out = tmp_path / "curve.json"
    assert n_curve.main(["--config", str(REPO / "configs/shapes.yaml"), "--n", "1", "2", "4", "--out", str(out),
                         "--plot", str(tmp_path / "curve.png"), "--sheets", str(tmp_path / "sheets"),
                         "--num-sheets", "2", "--prm", *overrides]) == 0
    result = json.loads(out.read_text())
    assert set(result["curves"]) == {"baseline", "orm_zs", "orm_ft", "prm", "parm", "oracle"}
    oracle = result["curves"]["oracle"]
    assert oracle["1"] == result["curves"]["baseline"]["1"] <= oracle["2"] <= oracle["4"]  # any-correct grows
    assert all(result["curves"][m]["4"] <= oracle["4"] for m in result["curves"] if m != "prm")  # same paths
    assert (tmp_path / "curve.png").stat().st_size > 0 and len(list((tmp_path / "sheets").glob("*.png"))) == 2
