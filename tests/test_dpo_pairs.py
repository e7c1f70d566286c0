"""dpo/pairs.py (and dpo/prompt_subset.py): labelled candidates -> pair files."""
import json
import os

import numpy as np
import pytest
import torch

from dpo import pairs
from dpo.prompt_subset import balanced_subset
from geneval.layout import write_metadata, write_sample
from geneval.suites import load_metadata

PROMPTS = ["a photo of a circle", "a photo of a square", "a photo of a cross"]
LABELS = [[True, False, False], [True, True, True], [False, False, False]]
"""Prompt 0 mixes labels; prompt 1 is all yes, prompt 2 all no: both dropped."""


def image(value: int) -> np.ndarray:
    return np.full((64, 64, 3), value, dtype=np.uint8)


@pytest.fixture
def outdir(tmp_path, monkeypatch):
    """A main.py-style OUTDIR, with a results.jsonl whose filenames spell OUTDIR relatively."""
    monkeypatch.chdir(tmp_path)
    results = []
    for index, (prompt, labels) in enumerate(zip(PROMPTS, LABELS)):
        write_metadata("run", index, {"tag": "single_object", "include": [], "prompt": prompt})
        for sample, label in enumerate(labels):
            write_sample("run", index, sample, image(40 * index + 10 * sample))
            results.append({"filename": os.path.join("run", f"{index:05d}", "samples", f"{sample:04d}.png"),
                            "prompt": prompt, "tag": "single_object", "correct": label})
    (tmp_path / "run" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    return tmp_path / "run"


def labelled(outdir):
    groups = pairs.scan_candidates(outdir)
    pairs.apply_geneval_labels(groups, outdir / "results.jsonl")
    return groups


def test_geneval_labels_follow_the_results_file(outdir):
    groups = labelled(outdir)
    assert [[c.label for c in group] for group in groups.values()] == LABELS
    assert [group[0].prompt for group in groups.values()] == PROMPTS


def test_random_pairs_drop_single_label_prompts(outdir):
    records, stats = pairs.random_pairs(labelled(outdir), seed=0, pairs_per_prompt=3)
    assert (stats.prompts, stats.dropped_all_yes, stats.dropped_all_no, stats.pairs) == (3, 1, 1, 1)
    (record,) = records  # min(3 wanted, 1 yes, 2 no) = 1 pair
    assert record["prompt"] == PROMPTS[0] and record["weight"] == 1.0
    assert record["chosen"].endswith("00000/samples/0000.png")
    assert record["rejected"].endswith(("00000/samples/0001.png", "00000/samples/0002.png"))


def test_parm_pairs_take_the_best_yes_and_the_hard_negative(outdir):
    groups = labelled(outdir)
    for candidates, scores in zip(groups.values(), [[0.6, 0.2, 0.9], [0.5] * 3, [0.1] * 3]):
        for candidate, score in zip(candidates, scores):
            candidate.score = score
    records, stats = pairs.parm_pairs(groups)
    assert stats.pairs == 1
    assert records[0]["chosen"].endswith("0000.png") and records[0]["rejected"].endswith("0002.png")
    assert records[0]["weight"] == pytest.approx(1.0)  # one pair: normalised to mean 1


class BrightnessJudge:
    """P(yes) grows with the mean pixel value (a stand-in for a trained judge)."""

    def yes_no_probs(self, images, questions):
        assert len(images) == len(questions) and all(q.kind == "orm" for q in questions)
        p_yes = images.float().mean((1, 2, 3)) / 255
        return p_yes, 1 - p_yes


def test_judge_labels_and_scores(outdir):
    groups = pairs.scan_candidates(outdir)
    pairs.apply_judge_labels(groups, BrightnessJudge())
    values = [[40 * i + 10 * s for s in range(3)] for i in range(3)]
    assert [[c.label for c in g] for g in groups.values()] == [[v / 255 > 0.5 for v in row] for row in values]
    pairs.apply_parm_scores(groups, BrightnessJudge())
    assert [c.score for c in groups["00002"]] == pytest.approx([v / 255 for v in values[2]])


def test_cli_writes_a_pair_file_with_a_real_shapes_judge(outdir, tmp_path):
    from reward_models.shapes_judge import JudgeNet, JudgeNetConfig, save_judge
    from shapes.word_tokenizer import WordTokenizer
    from shapes.patch_tokenizer import PatchTokenizer

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tokenizer = PatchTokenizer.load(os.path.join(repo, "weights/shapes/tokenizer"))
    text = WordTokenizer.for_shapes_world()
    torch.manual_seed(0)
    save_judge(tmp_path / "parm", JudgeNet(JudgeNetConfig(text_vocab_size=len(text),
                                                          codebook_size=tokenizer.cfg.codebook_size,
                                                          hidden_size=16, num_layers=1, num_heads=2)).eval(),
               text, tokenizer)
    pairs.main([str(outdir), "--out", "pairs.jsonl", "--mode", "parm", "--parm", str(tmp_path / "parm")])
    (record,) = pairs.read_pairs("pairs.jsonl")
    assert record["prompt"] == PROMPTS[0] and record["chosen"].endswith("0000.png")
    assert record["weight"] == pytest.approx(1.0)


def test_pair_files_round_trip_tokens_and_reject_bad_lines(tmp_path):
    records = [{"prompt": "a photo of a circle", "chosen": [1, 2, 3], "rejected": "x.png"}]
    pairs.write_pairs(tmp_path / "p.jsonl", records)
    assert pairs.read_pairs(tmp_path / "p.jsonl") == [{**records[0], "weight": 1.0}]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "a", "chosen": "x.png"}) + "\n")
    with pytest.raises(ValueError, match="missing"):
        pairs.read_pairs(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="no pair file"):
        pairs.read_pairs(tmp_path / "absent.jsonl")


def test_missing_verdict_names_the_image(outdir):
    (outdir / "results.jsonl").write_text("")
    with pytest.raises(ValueError, match="00000/samples/0000.png"):
        labelled(outdir)


def test_training_prompt_subset_is_balanced_and_disjoint_from_evaluation():
    pool = load_metadata("geneval/prompts/shapes/train_metadata.jsonl")
    subset = balanced_subset(pool, 30, seed=0)
    assert len({r["prompt"] for r in subset}) == 30
    tags = [r["tag"] for r in subset]
    assert max(tags.count(t) for t in set(tags)) - min(tags.count(t) for t in set(tags)) <= 1
    evaluation = {r["prompt"] for r in load_metadata("geneval/prompts/shapes/evaluation_metadata.jsonl")}
    assert not evaluation & {r["prompt"] for r in subset}
    assert balanced_subset(pool, 30, seed=0) == subset
