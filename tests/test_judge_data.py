"""Shapes-judge data and recipes: reflection targets, the labelled-generation file, fine-tuning, reflect()."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from geneval.detection import Detection
from geneval.suites import color_record, counting_record, position_record, two_object_record
from geneval.rules import RuleConfig, filter_detections
from generation.config import GenerationConfig
from generation.tiny.backend import TinyGenerator
from shapes.word_tokenizer import WordTokenizer
from shapes.patch_tokenizer import PatchTokenizer
from reward_models import JudgeConfig, Question, build_judge
from training import judge_data
from training.judge_data import reflection_target
from reward_models.shapes_judge import CRITIQUES, JudgeNet, JudgeNetConfig, load_judge, save_judge
from training.train_judges import (clarity_label, finetune, generated_examples, merge_examples, parse_args,
                                              split_prompts, train, within_prompt_pairs)
from reward_models.verifiers import is_reflective

RULES = RuleConfig()


def det(label: str, box: tuple, color: str = "red", score: float = 1.0) -> Detection:
    return Detection(label=label, box=tuple(float(v) for v in box), score=score, color=color)


def flagged_cells(record: dict, detections: list[Detection]) -> tuple[str, set[tuple[int, int]]]:
    critique, regenerate = reflection_target(record, filter_detections(record, detections, RULES), RULES)
    return critique, {(i // 8, i % 8) for i in torch.nonzero(regenerate).flatten().tolist()}


def cells(rows: range, cols: range) -> set[tuple[int, int]]:
    return {(r, c) for r in rows for c in cols}


ALL = cells(range(8), range(8))


def test_a_correct_image_flags_nothing():
    record = two_object_record("circle", "square")
    critique, flagged = flagged_cells(record, [det("circle", (0, 0, 15, 15)), det("square", (32, 32, 47, 47))])
    assert critique == "ok" and flagged == set()


def test_a_missing_object_keeps_the_present_one_and_redraws_the_rest():
    record = two_object_record("circle", "square")
    critique, flagged = flagged_cells(record, [det("circle", (0, 0, 15, 15))])
    assert critique == "missing-1" and flagged == ALL - cells(range(0, 2), range(0, 2))


def test_a_wrong_colour_redraws_the_object():
    critique, flagged = flagged_cells(color_record("circle", "red"), [det("circle", (8, 8, 23, 23), color="blue")])
    assert critique == "color-0" and flagged == ALL


def test_too_many_keeps_the_top_count_and_drops_the_extra():
    record = counting_record("star", "stars", 2)  # include star>=2, exclude star>=3
    found = [det("star", (0, 0, 7, 7), score=1.0), det("star", (16, 0, 23, 7), score=0.98),
             det("star", (40, 40, 55, 55), score=0.95)]
    critique, flagged = flagged_cells(record, found)
    assert critique == "extra" and flagged == ALL - {(0, 0), (0, 2)}


def test_a_wrong_position_keeps_only_the_reference_object():
    record = position_record("circle", "left of", "square")  # circle must be left of the square
    critique, flagged = flagged_cells(record, [det("circle", (48, 24, 63, 39)), det("square", (0, 24, 15, 39))])
    assert critique == "position" and flagged == ALL - cells(range(3, 5), range(0, 2))


def test_clarity_labels_are_static_by_step():
    assert [clarity_label(s, 12, 0.5, 0.4) for s in range(1, 13)] == [False] * 4 + [None] + [True] * 7
    assert [clarity_label(s, 8, 0.5, 0.4) for s in range(1, 9)] == [False] * 3 + [True] * 5


@pytest.fixture(scope="module")
def data_file(tmp_path_factory, tiny_weights):
    generator = TinyGenerator(GenerationConfig(backend="tiny", weights=str(tiny_weights), order="mask", num_steps=4))
    records = judge_data.pick_records("train", 3, 0)
    args = argparse.Namespace(suite="train", seed=0, candidates=2, groups_per_batch=2, prm_groups=1, prm_rows=1,
                              prm_first=1, prm_every=2, continuations=3)
    data = judge_data.generate(generator, records, args)
    path = tmp_path_factory.mktemp("judge_data") / "mask.pt"
    judge_data.save_atomically(data, path)
    return path, data


def test_judge_data_file_layout_and_labels(data_file):
    _, data = data_file
    assert data["previews"].shape == (6, 4, 64) and data["traj_group"].tolist() == [0, 0, 1, 1, 2, 2]
    # PRM labels after steps 1 and 3 for row 0 of group 0; hits count the 3 continuations
    assert data["prm_step"].tolist() == [1, 3] and data["prm_group"].tolist() == [0, 0]
    assert all(0 <= h <= 3 for h in data["prm_hits"].tolist())
    assert torch.equal(data["prm_codes"], data["previews"][0, [0, 2]])
    # a failing final has a critique other than ok and flags some tokens; a correct one neither
    for label, critique, regenerate in zip(data["label"], data["critique"], data["regenerate"]):
        assert bool(label) == (CRITIQUES[int(critique)] == "ok") == (not regenerate.any())
    # the judges' tokenizer reads every stored preview back as its codes
    tokenizer = PatchTokenizer.load("weights/shapes/tokenizer")
    codes = data["previews"].long().flatten(0, 1)
    assert torch.equal(tokenizer.encode(tokenizer.decode_uint8(codes)), codes)


def test_generated_examples_per_recipe(data_file):
    _, data = data_file
    kinds = {recipe: generated_examples(data, recipe, 0.5, 0.4)["kind"] for recipe in ("orm_ft", "prm", "parm")}
    assert kinds["orm_ft"] == ["orm"] * 6
    assert kinds["prm"] == ["prm"] * (2 + 6)  # the two continuation labels, then the finals
    # 4 steps: 1 unclear (<= 1.6), 2 clear (>= 2); potential on the clear steps; finals
    assert sorted(set(kinds["parm"])) == ["clarity", "orm", "potential"]
    assert kinds["parm"].count("clarity") == 6 * 4 and kinds["parm"].count("potential") == 6 * 3
    plus = generated_examples(data, "parm++", 0.5, 0.4)
    finals = [i for i, k in enumerate(plus["kind"]) if k == "orm"]
    assert (plus["critique"][finals] >= 0).all() and (plus["critique"][len(finals):] == -1).all()


@pytest.fixture(scope="module")
def zero_shot(tmp_path_factory):
    folder = tmp_path_factory.mktemp("orm_zs")
    tokenizer, text = PatchTokenizer.load("weights/shapes/tokenizer"), WordTokenizer.for_shapes_world()
    torch.manual_seed(0)
    model = JudgeNet(JudgeNetConfig(text_vocab_size=len(text), codebook_size=tokenizer.cfg.codebook_size,
                                    hidden_size=32, num_layers=1, num_heads=2))
    save_judge(folder, model.eval(), text, tokenizer)
    return folder


def test_finetune_parm_plus_plus_trains_reflection_heads_and_reflects(data_file, zero_shot, tmp_path):
    out = tmp_path / "parm++"
    log = finetune(parse_args(["--recipe", "parm++", "--init", str(zero_shot), "--data", str(data_file[0]),
                               "--out", str(out), "--steps", "3", "--batch-size", "8"]))
    assert log["examples"]["clarity"] == 24 and log["examples"]["orm"] == 6
    model, _, _ = load_judge(out)
    base, _, _ = load_judge(zero_shot)
    assert model.cfg.reflection and not torch.equal(model.answer.weight, base.answer.weight)
    judge = build_judge(JudgeConfig(backend="shapes", checkpoint=str(out)), "cpu")
    assert is_reflective(judge)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    reflections = judge.reflect(images, ["a photo of a red circle", "a photo of two stars"])
    assert [r.token_mask.shape for r in reflections] == [(64,), (64,)]
    assert all(r.token_mask.dtype == torch.bool and isinstance(r.text, str) for r in reflections)
    p_yes, p_no = judge.yes_no_probs(images, [Question("potential", "a photo of a red circle")] * 2)
    assert torch.allclose(p_yes + p_no, torch.ones(2))


def test_ranking_pairs_stay_inside_one_prompt_question_and_step(data_file):
    _, data = data_file
    # groups 0 and 2 mixed, group 1 all correct (the tiny test generator's own labels are all "no")
    data = {**data, "label": torch.tensor([True, False, True, True, False, True])}
    one = generated_examples(data, "parm", 0.5, 0.4)
    pairs = within_prompt_pairs(one["group"], one["label"])
    # finals: (0, 1) and (5, 4); potential on each of the 3 clear steps (2-4 of 4): the same paths
    assert len(pairs) == 2 + 3 * 2
    assert sorted(map(tuple, pairs[:2].tolist())) == [(0, 1), (5, 4)]
    examples = merge_examples([one, one])  # two files' groups stay apart
    pairs = within_prompt_pairs(examples["group"], examples["label"])
    kinds = examples["kind"]
    assert len(pairs) == 2 * (2 + 3 * 2)
    for yes, no in pairs.tolist():
        assert examples["label"][yes] and not examples["label"][no]
        assert examples["prompt"][yes] == examples["prompt"][no] and kinds[yes] == kinds[no] != "clarity"
        assert (yes < len(kinds) // 2) == (no < len(kinds) // 2)  # never across files
    finals = [i for i, k in enumerate(kinds) if k == "orm"]
    assert set(examples["group"][finals].tolist()).isdisjoint(  # potential groups differ from final groups
        examples["group"][[i for i, k in enumerate(kinds) if k == "potential"]].tolist())


def test_finetune_logs_its_ranking_pairs(data_file, zero_shot, tmp_path):
    log = finetune(parse_args(["--recipe", "orm_ft", "--init", str(zero_shot), "--data", str(data_file[0]),
                               "--out", str(tmp_path / "orm_ft"), "--steps", "2", "--batch-size", "8",
                               "--pair-batch", "2"]))
    _, data = data_file
    examples = generated_examples(data, "orm_ft", 0.5, 0.4)
    assert log["within_prompt_pairs"] == len(within_prompt_pairs(examples["group"], examples["label"]))


def test_zero_shot_recipe_trains_the_scene_head_and_logs_heldout_accuracy(tmp_path):
    log = train(parse_args(["--recipe", "orm_zs", "--out", str(tmp_path / "zs"), "--num-examples", "64",
                            "--eval-examples", "16", "--steps", "2", "--batch-size", "8", "--eval-every", "1"]))
    model, _, _ = load_judge(tmp_path / "zs")
    assert model.cfg.scene_head and model.scene.out_features == 7 + 11
    assert all("heldout_rendered_accuracy" in point for point in log["curve"])
    assert log["curve"][0]["loss"] > log["curve"][0]["answer_loss"]  # the scene loss is part of the loss


def test_a_judge_without_reflection_heads_is_not_reflective(zero_shot):
    judge = build_judge(JudgeConfig(backend="shapes", checkpoint=str(zero_shot)), "cpu")
    assert not is_reflective(judge)
    with pytest.raises(ValueError, match="--recipe parm\\+\\+"):
        judge.reflect(torch.zeros(1, 3, 64, 64, dtype=torch.uint8), ["a photo of a cross"])


def test_heldout_suite_reads_every_evaluation_prompt():
    records = judge_data.pick_records("heldout", 10_000, 0)
    assert len(records) == 73
    train = judge_data.pick_records("train", 5, 0)
    assert len(train) == 5 and len({r["prompt"] for r in train}) == 5
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in records}
    assert np.all([r["tag"] for r in records])


def test_a_fresh_pixel_stem_judge_finetunes_and_reports_held_in_ranking(data_file, tmp_path):
    out = tmp_path / "orm_ft_pixels"
    log = finetune(parse_args(["--recipe", "orm_ft", "--init", "none", "--hidden-size", "16", "--layers", "1",
                               "--heads", "2", "--pixel-stem", "4", "--val-every", "3", "--data", str(data_file[0]),
                               "--out", str(out), "--steps", "2", "--batch-size", "8", "--pair-batch", "1"]))
    _, data = data_file
    train_part, held_in = split_prompts(data, 3)
    assert held_in["traj_group"].tolist() == [2, 2] and train_part["traj_group"].tolist() == [0, 0, 1, 1]
    assert log["examples"]["orm"] == 4 and set(log["validation_ranking"]) == {"mask"}
    judge = build_judge(JudgeConfig(backend="shapes", checkpoint=str(out)), "cpu")
    assert judge.model.cfg.pixel_stem == 4 and judge.model.cfg.hidden_size == 16
    yes, no = judge.yes_no_probs(torch.zeros(2, 3, 64, 64, dtype=torch.uint8), [Question("orm", "a red square")] * 2)
    assert torch.allclose(yes + no, torch.ones(2))


def test_accuracy_report_of_a_parm_judge_has_every_figure_with_its_error(data_file, zero_shot, tmp_path):
    from training.judge_accuracy import markdown, score_judge
    out = tmp_path / "parm"
    finetune(parse_args(["--recipe", "parm", "--init", str(zero_shot), "--data", str(data_file[0]),
                         "--out", str(out), "--steps", "2", "--batch-size", "8", "--pair-batch", "1"]))
    result = score_judge(str(out), data_file[1])
    assert {"orm", "clarity", "potential", "ranking", "parm"} <= set(result)
    assert all("se" in result[k] for k in ("orm", "clarity", "potential", "ranking"))
    assert result["parm"]["num_steps"] == 4 and result["parm"]["labelled_clear_step"] == 2
    table = markdown({"parm": {"mask": result}})
    assert table.count("\n") == 2 and "±" in table.splitlines()[2]
