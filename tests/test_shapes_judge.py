"""Shapes-world judges: the model behind YesNoJudge, its checkpoint round trip, the zero-shot ORM data."""
import numpy as np
import pytest
import torch

from geneval.prompts import enumerate_records, shapes_vocabulary
from generation.tiny.text import WordTokenizer
from generation.tiny.vq import PatchTokenizer
from reward_models import JudgeConfig, Question, build_judge
from reward_models.shapes_judge import JudgeNet, JudgeNetConfig, save_judge
from reward_models.train_shapes_judge import caption_example, perturb


@pytest.fixture(scope="module")
def judge_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("judge")
    tokenizer = PatchTokenizer.load("weights/shapes/tokenizer")
    text = WordTokenizer.for_shapes_world()
    torch.manual_seed(0)
    model = JudgeNet(JudgeNetConfig(text_vocab_size=len(text), codebook_size=tokenizer.cfg.codebook_size,
                                    hidden_size=32, num_layers=1, num_heads=2))
    save_judge(folder, model.eval(), text, tokenizer)
    return folder, model


def test_judge_loads_through_the_registry_and_scores_in_batches(judge_folder):
    folder, model = judge_folder
    judge = build_judge(JudgeConfig(backend="shapes", checkpoint=str(folder), batch_size=2), "cpu")
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    questions = [Question("orm", "a photo of a red circle"), Question("clarity", "a photo of two stars"),
                 Question("potential", "a photo of a star left of a cross")]
    p_yes, p_no = judge.yes_no_probs(images, questions)
    assert p_yes.shape == (3,) and torch.allclose(p_yes + p_no, torch.ones(3))
    one = torch.cat([judge.yes_no_probs(images[i:i + 1], questions[i:i + 1])[0] for i in range(3)])
    torch.testing.assert_close(p_yes, one)
    # the same numbers as the model itself on the tokenizer's codes
    kinds = torch.tensor([model.cfg.kinds.index(q.kind) for q in questions])
    text = WordTokenizer.for_shapes_world().encode([q.prompt for q in questions])
    direct = model(kinds, text, PatchTokenizer.load("weights/shapes/tokenizer").encode(images)).softmax(-1)
    torch.testing.assert_close(p_yes, direct[:, 0].detach())


def test_missing_judge_names_the_training_command(tmp_path):
    with pytest.raises(ValueError, match="train_shapes_judge"):
        build_judge(JudgeConfig(backend="shapes", checkpoint=str(tmp_path)), "cpu")


def test_perturbed_captions_change_one_attribute_and_keep_the_tag():
    rng = np.random.default_rng(0)
    for record in enumerate_records(shapes_vocabulary())[::7]:
        changed = perturb(record, rng)
        assert changed["tag"] == record["tag"] and changed["prompt"] != record["prompt"], record["prompt"]


def test_caption_labels_are_geneval_decisions_on_the_ground_truth():
    records = [r for r in enumerate_records(shapes_vocabulary()) if r["tag"] == "position"]
    rng = np.random.default_rng(1)
    labels = [caption_example(records, None, rng) for _ in range(60)]
    own = [label for caption, _, label in labels]
    assert any(own) and not all(own)  # matched captions are yes, most changed ones no
