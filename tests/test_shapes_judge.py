"""Shapes-world judges: the model behind YesNoJudge, its checkpoint round trip, the zero-shot ORM data."""
import numpy as np
import pytest
import torch

from geneval.suites import enumerate_records, shapes_vocabulary
from shapes.word_tokenizer import WordTokenizer
from shapes.patch_tokenizer import PatchTokenizer
from reward_models import JudgeConfig, Question, build_judge
from reward_models.shapes_judge import JudgeNet, JudgeNetConfig, save_judge
from shapes.render import SceneObject
from training.train_judges import (caption_example, pairwise_loss, perturb, perturb_scene, scene_loss,
                                              scene_targets, within_prompt_pairs)


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
    with pytest.raises(ValueError, match="training.train_judges"):
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
    own = [label for caption, _, label, _ in labels]
    assert any(own) and not all(own)  # matched captions are yes, most changed ones no


def test_scene_targets_mark_each_object_box_with_its_shape_and_colour():
    scene = [SceneObject("star", "blue", (1, 2), 2), SceneObject("circle", "red", (5, 5), 3)]
    shape, color = scene_targets(scene)
    grid = shape.reshape(8, 8)
    assert (grid[2:4, 1:3] == 1 + 3).all()  # "star" is SHAPES[3]; rows 2-3, columns 1-2
    assert (grid[5:8, 5:8] == 1).all()  # "circle" is SHAPES[0]
    assert (grid != 0).sum() == 4 + 9
    assert set(color[shape != 0].tolist()) == {1 + 4, 1 + 0}  # blue is COLORS[4], red COLORS[0]
    # a perfect scene head has a lower loss than a wrong one
    logits = torch.zeros(1, 64, 7 + 11)
    truth = torch.from_numpy(np.stack([shape, color]))[None]
    right = logits.clone()
    right[0, torch.arange(64), truth[0, 0]] = 10
    right[0, torch.arange(64), 7 + truth[0, 1]] = 10
    assert scene_loss(right, truth) < 0.01 < scene_loss(logits, truth)


def test_scene_changes_keep_objects_apart_and_change_the_scene():
    rng = np.random.default_rng(0)
    scene = [SceneObject("star", "blue", (0, 0), 2), SceneObject("circle", "red", (4, 4), 3)]
    seen = set()
    for _ in range(40):
        changed = perturb_scene(scene, rng)
        assert changed != scene
        seen.add(len(changed) - len(scene))
        for i, a in enumerate(changed):  # one empty cell between any two boxes
            for b in changed[i + 1:]:
                apart_x = a.cell[0] + a.size < b.cell[0] or b.cell[0] + b.size < a.cell[0]
                apart_y = a.cell[1] + a.size < b.cell[1] or b.cell[1] + b.size < a.cell[1]
                assert apart_x or apart_y
    assert seen == {-1, 0, 1}  # dropped, recoloured/reshaped, added


def test_within_prompt_pairs_compare_only_one_group():
    groups = torch.tensor([0, 0, 0, 1, 1, -1, -1, 2])
    labels = torch.tensor([True, False, False, True, True, True, False, False])
    pairs = within_prompt_pairs(groups, labels)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (0, 2)]  # group 1 all yes, -1 in none, 2 alone


def test_pairwise_loss_prefers_the_yes_side_ranked_higher():
    # rows: yes sides then no sides; score = yes logit - no logit
    good = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    bad = torch.tensor([[0.0, 1.0], [0.0, 0.0], [2.0, 0.0], [1.0, 0.0]])
    expected = torch.nn.functional.softplus(torch.tensor([-3.0, -1.0])).mean()
    torch.testing.assert_close(pairwise_loss(good, 2), expected)
    assert pairwise_loss(bad, 2) > pairwise_loss(good, 2)
    assert pairwise_loss(good, 0) == 0


def test_within_prompt_ranking_and_its_prompt_clustered_standard_error_by_hand():
    from training.ranking import within_prompt_ranking
    scores = torch.tensor([0.9, 0.2, 0.5, 0.3, 0.3, 0.7, 0.1, 0.8])
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])
    labels = torch.tensor([True, False, False, True, False, True, True, False])
    result = within_prompt_ranking(scores, groups, labels)
    # prompt 0: 0.9 beats 0.2 and 0.5 -> 2 of 2; prompt 1: a tie -> 0.5 of 1; prompts 2, 3: no pair
    wins, pairs = [2.0, 0.5], [2, 1]
    rate = sum(wins) / sum(pairs)
    se = (2 / 1 * sum((w - rate * n) ** 2 for w, n in zip(wins, pairs))) ** 0.5 / sum(pairs)
    assert result == {"accuracy": pytest.approx(rate), "se": pytest.approx(se), "pairs": 3, "prompts": 2}
    assert within_prompt_ranking(scores[:1], groups[:1], labels[:1])["pairs"] == 0


def test_pixel_stem_sees_across_cell_borders_and_needs_square_rgb_patches():
    tokenizer = PatchTokenizer.load("weights/shapes/tokenizer")
    cfg = JudgeNetConfig(codebook_size=tokenizer.cfg.codebook_size, patch_pixels=tokenizer.codebook.shape[1],
                         hidden_size=16, num_layers=1, num_heads=2, pixel_stem=4)
    torch.manual_seed(0)
    model = JudgeNet(cfg)
    model.set_patches(tokenizer.codebook)
    codes = torch.zeros(2, 64, dtype=torch.long)
    codes[1, 0] = next(c for c in range(1, tokenizer.cfg.codebook_size)
                       if not torch.equal(tokenizer.codebook[c], tokenizer.codebook[0]))
    features = model.embed_image(codes) - model.image_embed(codes) - model.patch_embed(model.patches[codes])
    assert features.shape == (2, 64, 16)
    changed = (features[0] - features[1]).abs().amax(-1) > 0
    # cell 0 changed; its right and lower neighbours see it through the stem, a far cell does not
    assert changed[0] and changed[1] and changed[8] and not changed[63]
    with pytest.raises(ValueError, match="power-of-2"):
        JudgeNet(JudgeNetConfig(patch_pixels=3 * 36, pixel_stem=4))


class StepJudge(torch.nn.Module):
    """Clarity says yes once code 0 of the preview is 2 or more; potential's yes logit is code 1."""

    def __init__(self):
        super().__init__()
        self.cfg = JudgeNetConfig(hidden_size=8, num_layers=1, num_heads=1)

    def forward(self, kinds, text, codes):
        clarity = kinds == self.cfg.kinds.index("clarity")
        yes = torch.where(clarity, codes[:, 0].float() - 1.5, codes[:, 1].float())
        return torch.stack([yes, torch.zeros_like(yes)], 1)


def test_parm_report_takes_potential_at_the_first_clear_step_as_the_policy_does():
    from training.judge_accuracy import potential_at_first_clear
    from training.ranking import auc
    steps, n = 4, 5
    previews = torch.zeros(n, steps, 64, dtype=torch.short)
    previews[:, :, 0] = torch.tensor([[0, 1, 2, 3], [0, 2, 2, 2], [0, 0, 0, 0], [3, 3, 3, 3], [0, 1, 2, 2]])
    # potential's score at every step; only the first clear step's counts
    previews[:, :, 1] = torch.tensor([[9, 9, 4, 0], [9, 1, 0, 0], [5, 5, 5, 5], [2, 9, 9, 9], [0, 0, 3, 9]])
    data = {"traj_group": torch.tensor([0, 0, 1, 1, 2]), "num_steps": steps, "prompts": ["a red square", "a blue circle", "two squares"],
            "previews": previews, "label": torch.tensor([True, False, True, True, False])}
    report = potential_at_first_clear(StepJudge(), WordTokenizer.for_shapes_world(), data, clear_from=0.5)
    # first clear steps (1-based): 3, 2, never, 1, 3; potentials there: 4, 1, -, 2, 3
    assert report["never_clear"] == 1 and report["first_clear_step"] == pytest.approx((3 + 2 + 1 + 3) / 4)
    assert report["labelled_clear_step"] == 2 and report["clear_before_boundary"] == pytest.approx(1 / 4)
    assert report["potential_auc"] == auc(torch.tensor([4.0, 1.0, 2.0, 3.0]).sigmoid(),
                                          torch.tensor([True, False, True, False]))
    # positives 4, 2 against negatives 1, 3: 3 of 4 pairs
    assert report["potential_auc"]["auc"] == pytest.approx(0.75)


def test_auc_and_its_hanley_mcneil_standard_error_by_hand():
    from training.ranking import auc
    result = auc(torch.tensor([0.9, 0.4, 0.4, 0.1]), torch.tensor([True, True, False, False]))
    a = (2 + 1 + 0.5) / 4  # 0.9 beats both; 0.4 beats 0.1 and ties 0.4
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = ((a * (1 - a) + (q1 - a * a) + (q2 - a * a)) / 4) ** 0.5
    assert result == {"auc": pytest.approx(a), "se": pytest.approx(se), "positives": 2, "negatives": 2}
