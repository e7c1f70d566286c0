"""The shapes world: renderer, detector, dataset builder and tokenizer round trips."""
from pathlib import Path

import numpy as np
import pytest
import torch

from geneval.suites import enumerate_records, load_metadata, shapes_vocabulary
from geneval.rules import RuleConfig, evaluate_image, filter_detections
from shapes.dataset import build_pairs, draw_pair
from shapes.detect import ShapesDetector, detect_image, scene_key
from shapes.render import SceneObject, render, sample_scene, shape_mask
from shapes.world import BACKGROUND, CELL, SHAPES

SHAPES_SUITE = Path("geneval/prompts/shapes/evaluation_metadata.jsonl")


def test_every_evaluation_record_renders_to_a_correct_image():
    rng = np.random.default_rng(0)
    for record in load_metadata(SHAPES_SUITE):
        image = render(sample_scene(record, rng))
        detected = filter_detections(record, detect_image(image), RuleConfig())
        correct, reason = evaluate_image(record, detected, RuleConfig())
        assert correct, (record["prompt"], reason)


def test_detector_reads_clean_scenes_exactly():
    rng = np.random.default_rng(1)
    records = enumerate_records(shapes_vocabulary())
    for index in rng.choice(len(records), 300, replace=False):
        scene = sample_scene(records[index], rng)
        found = detect_image(render(scene))
        assert scene_key(found) == scene_key([o.as_detection() for o in scene])
        assert all(d.score == 1.0 for d in found)


def test_detector_box_and_mask_follow_mmdet_convention():
    image = render([SceneObject("square", "red", cell=(1, 2), size=3)])
    (det,) = detect_image(image)
    assert det.box == (8.0, 16.0, 32.0, 40.0)  # x_max + 1, y_max + 1
    assert det.mask.sum() == 24 * 24 and det.mask[16:40, 8:32].all()


def test_detector_scores_a_malformed_blob_lower_and_ignores_specks():
    image = render([SceneObject("star", "blue", cell=(2, 2), size=4)])
    blob = image.copy()
    blob[16:24, 16:48] = image[20, 32]  # paint a bar over the star's top: no longer a clean star
    blob[2:4, 2:4] = image[20, 32]  # a 4-pixel speck is noise
    (det,) = detect_image(blob)
    assert det.score < 0.9
    assert not detect_image(np.full((64, 64, 3), BACKGROUND, dtype=np.uint8))


def test_detector_rejects_non_rgb_input():
    with pytest.raises(ValueError, match="RGB"):
        ShapesDetector().detect([np.zeros((64, 64), dtype=np.uint8)])


@pytest.mark.parametrize("relation", ["left of", "right of", "above", "below"])
def test_position_scenes_satisfy_geneval_relation(relation):
    record = {"tag": "position", "prompt": "p", "include": [
        {"class": "circle", "count": 1}, {"class": "star", "count": 1, "position": [relation, 0]}]}
    rng = np.random.default_rng(2)
    for _ in range(20):
        image = render(sample_scene(record, rng))
        assert evaluate_image(record, filter_detections(record, detect_image(image), RuleConfig()), RuleConfig())[0]


def test_objects_stay_on_the_cell_grid_and_apart():
    rng = np.random.default_rng(3)
    record = {"tag": "counting", "prompt": "p", "include": [{"class": "cross", "count": 4}]}
    for _ in range(50):
        scene = sample_scene(record, rng)
        assert len(scene) == 4
        taken = np.zeros((8, 8), dtype=int)
        for obj in scene:
            x1, y1, x2, y2 = obj.box
            assert x1 % CELL == 0 and y2 % CELL == 0
            taken[y1 // CELL - 1 if y1 else 0:y2 // CELL + 1, x1 // CELL - 1 if x1 else 0:x2 // CELL + 1] += 1
        # grown footprints may overlap, but the objects' own cells never touch another's
        own = np.zeros((8, 8), dtype=int)
        for obj in scene:
            x1, y1, x2, y2 = (v // CELL for v in obj.box)
            own[y1:y2, x1:x2] += 1
        assert own.max() == 1


def test_unknown_class_is_rejected():
    with pytest.raises(ValueError, match="not a shapes-world class"):
        sample_scene({"tag": "single_object", "prompt": "p", "include": [{"class": "dog", "count": 1}]},
                     np.random.default_rng(0))


def test_shape_masks_fill_their_box():
    for shape in SHAPES:
        mask = shape_mask(shape, 24, 24)
        assert mask[:, 0].any() and mask[:, -1].any() and mask[0].any() and mask[-1].any(), shape


def test_dataset_is_seeded_and_sliceable():
    records = load_metadata("geneval/prompts/shapes/train_metadata.jsonl")
    index, images = build_pairs(records, 12, seed=5, chunk=5)
    again_index, again = build_pairs(records, 4, seed=5, start=8)
    assert np.array_equal(index[8:], again_index) and np.array_equal(images[8:], again)
    single_index, single = draw_pair(records, 5, 3)
    assert single_index == index[3] and np.array_equal(single, images[3])
    assert not np.array_equal(build_pairs(records, 4, seed=6)[1], images[:4])
    with pytest.raises(ValueError, match="empty"):
        build_pairs([], 1, seed=0)


def test_shipped_tokenizer_reconstructs_fresh_scenes_exactly():
    from shapes.patch_tokenizer import PatchTokenizer
    tokenizer = PatchTokenizer.load("weights/shapes/tokenizer")
    records = load_metadata(SHAPES_SUITE)
    _, images = build_pairs(records, 64, seed=123)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2)
    recon = tokenizer.decode_uint8(tokenizer.encode(tensor))
    assert torch.equal(recon, tensor)
