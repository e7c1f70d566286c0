"""GenEval rules (geneval.rules) on hand-built detections, against hand-computed expectations.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_rules.py
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from geneval.config import GenEvalConfig
from geneval.detection import Detection
from geneval.rules import (RuleConfig, compute_iou, details_json, evaluate_image, filter_detections,
                           relative_position, result_record)

METADATA_FILE = Path(__file__).resolve().parents[1] / ".." / "shared" / "geneval" / "evaluation_metadata.jsonl"


def det(label, box, score=0.95, color=None):
    return Detection(label=label, box=tuple(box), score=score, color=color)


def single(obj):
    return {"tag": "single_object", "prompt": f"a photo of a {obj}", "include": [{"class": obj, "count": 1}]}


def position_prompt(a, rel, b):
    return {"tag": "position", "prompt": f"a photo of a {a} {rel} a {b}",
            "include": [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [rel, 0]}]}


def counting(obj, n):
    return {"tag": "counting", "prompt": f"a photo of {n} {obj}s",
            "include": [{"class": obj, "count": n}], "exclude": [{"class": obj, "count": n + 1}]}


def colors_prompt(color, obj, count=1):
    return {"tag": "colors", "prompt": f"a photo of a {color} {obj}",
            "include": [{"class": obj, "count": count, "color": color}]}


CFG = RuleConfig()


# ----------------------------------------------------------------------------
# RuleConfig

def test_rule_config_defaults_and_from_geneval():
    assert RuleConfig() == RuleConfig(threshold=0.3, counting_threshold=0.9, max_objects=16,
                                      max_overlap=1.0, position_threshold=0.1)
    cfg = RuleConfig.from_geneval(GenEvalConfig(threshold=0.4, counting_threshold=0.8, max_objects=3,
                                                max_overlap=0.5, position_threshold=0.2))
    assert cfg == RuleConfig(threshold=0.4, counting_threshold=0.8, max_objects=3, max_overlap=0.5,
                             position_threshold=0.2)


# ----------------------------------------------------------------------------
# compute_iou (+1 pixel convention)

def test_iou_plus_one_convention():
    # areas 10*10 = 100 each; intersection [5..9] x [5..9] = 5*5 = 25; union 175
    assert compute_iou((0, 0, 9, 9), (5, 5, 14, 14)) == pytest.approx(25 / 175)
    # boxes sharing the column x=9 overlap by one pixel column: 1*10 / (100 + 100 - 10)
    assert compute_iou((0, 0, 9, 9), (9, 0, 18, 9)) == pytest.approx(10 / 190)
    assert compute_iou((0, 0, 4, 4), (10, 10, 14, 14)) == 0.0
    assert compute_iou((3, 3, 7, 7), (3, 3, 7, 7)) == 1.0
    # score column is ignored
    assert compute_iou((0, 0, 9, 9, 0.9), (5, 5, 14, 14, 0.1)) == pytest.approx(25 / 175)


def test_iou_zero_union_is_zero():
    assert compute_iou((0, 0, -1, -1), (0, 0, -1, -1)) == 0.0


# ----------------------------------------------------------------------------
# filter_detections

def test_threshold_is_strict():
    kept = filter_detections(single("dog"), [det("dog", (0, 0, 5, 5), 0.3), det("dog", (9, 9, 20, 20), 0.31)], CFG)
    assert [d.score for d in kept["dog"]] == [0.31]


def test_class_with_nothing_kept_is_absent():
    kept = filter_detections(single("dog"), [det("dog", (0, 0, 5, 5), 0.9), det("cat", (0, 0, 5, 5), 0.2)], CFG)
    assert list(kept) == ["dog"]


def test_counting_threshold_applies_to_every_class():
    dets = [det("cat", (0, 0, 5, 5), 0.5), det("dog", (10, 10, 20, 20), 0.95), det("dog", (30, 30, 40, 40), 0.9)]
    assert list(filter_detections(counting("dog", 2), dets, CFG)) == ["dog"]
    assert [d.score for d in filter_detections(counting("dog", 2), dets, CFG)["dog"]] == [0.95]  # 0.9 is not > 0.9
    kept = filter_detections(single("dog"), dets, CFG)
    assert {k: len(v) for k, v in kept.items()} == {"cat": 1, "dog": 2}


def test_sorted_by_score_descending():
    dets = [det("dog", (0, 0, 5, 5), 0.4), det("dog", (10, 0, 15, 5), 0.8), det("dog", (20, 0, 25, 5), 0.6)]
    assert [d.score for d in filter_detections(single("dog"), dets, CFG)["dog"]] == [0.8, 0.6, 0.4]


def test_max_objects_cap():
    dets = [det("dog", (i * 10, 0, i * 10 + 5, 5), 0.5 + i / 100) for i in range(20)]
    kept = filter_detections(single("dog"), dets, CFG)["dog"]
    assert len(kept) == 16
    assert kept[-1].score == pytest.approx(0.5 + 4 / 100)  # the 4 weakest are cut


def test_cap_is_applied_before_nms():
    # 16 identical strong boxes, then one disjoint weaker box. Cap first: the disjoint box is cut,
    # NMS leaves one. (NMS first would have kept 2.)
    dets = [det("dog", (0, 0, 9, 9), 0.9 - i / 1000) for i in range(16)] + [det("dog", (50, 50, 59, 59), 0.5)]
    kept = filter_detections(single("dog"), dets, RuleConfig(max_overlap=0.5))["dog"]
    assert [d.box for d in kept] == [(0, 0, 9, 9)]
    kept = filter_detections(single("dog"), dets, RuleConfig(max_overlap=0.5, max_objects=17))["dog"]
    assert [d.box for d in kept] == [(0, 0, 9, 9), (50, 50, 59, 59)]


def test_no_nms_at_max_overlap_one():
    dets = [det("dog", (0, 0, 9, 9), 0.9), det("dog", (0, 0, 9, 9), 0.8)]  # IoU 1.0
    assert len(filter_detections(single("dog"), dets, RuleConfig(max_overlap=1.0))["dog"]) == 2
    assert len(filter_detections(single("dog"), dets, RuleConfig(max_overlap=0.99))["dog"]) == 1


def test_greedy_nms_with_plus_one_iou():
    a, b, c = (0, 0, 9, 9), (5, 0, 14, 9), (10, 0, 19, 9)
    # IoU(a, b) = IoU(b, c) = 5*10 / (100 + 100 - 50) = 1/3 (without the +1 it would be 36/126 = 0.286);
    # IoU(a, c) = 0. Greedy: a kept, b dropped by a, c kept (b is gone, so it cannot suppress c).
    dets = [det("dog", a, 0.9), det("dog", b, 0.8), det("dog", c, 0.7)]
    assert [d.box for d in filter_detections(single("dog"), dets, RuleConfig(max_overlap=0.3))["dog"]] == [a, c]
    # IoU == max_overlap is dropped (upstream keeps only iou < threshold)
    assert [d.box for d in filter_detections(single("dog"), dets, RuleConfig(max_overlap=1 / 3))["dog"]] == [a, c]
    assert len(filter_detections(single("dog"), dets, RuleConfig(max_overlap=0.34))["dog"]) == 3
    # NMS is per class: an identical cat box does not suppress the dog
    kept = filter_detections(single("dog"), [det("dog", a, 0.9), det("cat", a, 0.95)], RuleConfig(max_overlap=0.5))
    assert {k: len(v) for k, v in kept.items()} == {"dog": 1, "cat": 1}


# ----------------------------------------------------------------------------
# relative_position

def test_relative_position_basic_directions():
    b = (100, 100, 150, 150)
    assert relative_position((0, 100, 50, 150), b) == {"left of"}
    assert relative_position((200, 100, 250, 150), b) == {"right of"}
    assert relative_position((100, 0, 150, 50), b) == {"above"}  # y points down
    assert relative_position((100, 200, 150, 250), b) == {"below"}
    assert relative_position((200, 200, 250, 250), b) == {"right of", "below"}  # diagonal: both hold


def test_margin_is_normalised_by_unrevised_offset():
    # Both boxes 20x20: margin 0.1 * (20 + 20) = 4 per axis. Offset of centres = (10, 8),
    # revised = (6, 4), ||offset|| = sqrt(164) = 12.806 -> (dx, dy) = (0.469, 0.312): nothing holds.
    # Normalising by the revised norm sqrt(52) would give dx = 0.832 ("right of").
    a, b = (10, 8, 30, 28), (0, 0, 20, 20)
    assert relative_position(a, b) == set()
    # without the margin: (10, 8) / 12.806 = (0.781, 0.625) -> right of and below
    assert relative_position(a, b, position_threshold=0.0) == {"right of", "below"}


def test_tiny_revised_offset_is_empty():
    # zero-size boxes 0.0005 apart: revised offset 0.0005 < 1e-3 -> empty, although dx would be 1.0
    assert relative_position((0.0005, 0, 0.0005, 0), (0, 0, 0, 0)) == set()
    assert relative_position((0.002, 0, 0.002, 0), (0, 0, 0, 0)) == {"right of"}
    # identical boxes: zero offset, no division by zero
    assert relative_position((0, 0, 10, 10), (0, 0, 10, 10)) == set()
    # offset 1 inside the margin 0.1 * (10 + 10) = 2: empty
    assert relative_position((1, 0, 11, 10), (0, 0, 10, 10)) == set()


# ----------------------------------------------------------------------------
# evaluate_image

def decide(metadata, dets, cfg=CFG, colors_of=None):
    return evaluate_image(metadata, filter_detections(metadata, dets, cfg), cfg, colors_of)


def test_single_object_pass_and_shortfall():
    assert decide(single("dog"), [det("dog", (0, 0, 10, 10))]) == (True, "")
    assert decide(single("dog"), []) == (False, "expected dog>=1, found 0")


def test_unmentioned_classes_are_ignored():
    dets = [det("dog", (0, 0, 10, 10))] + [det("person", (i, i, i + 10, i + 10)) for i in range(10)]
    assert decide(single("dog"), dets) == (True, "")


def test_include_clauses_are_anded_with_reasons_in_order():
    meta = {"tag": "two_object", "prompt": "a photo of a dog and a cat",
            "include": [{"class": "dog", "count": 1}, {"class": "cat", "count": 1}]}
    assert decide(meta, [det("dog", (0, 0, 10, 10)), det("cat", (20, 0, 30, 10))]) == (True, "")
    assert decide(meta, [det("cat", (20, 0, 30, 10))]) == (False, "expected dog>=1, found 0")
    assert decide(meta, []) == (False, "expected dog>=1, found 0\nexpected cat>=1, found 0")


def test_counting_shortfall_and_exclude():
    meta = counting("dog", 2)
    two = [det("dog", (0, 0, 10, 10)), det("dog", (20, 0, 30, 10))]
    assert decide(meta, two) == (True, "")
    assert decide(meta, two[:1]) == (False, "expected dog>=2, found 1")
    three = two + [det("dog", (40, 0, 50, 10))]
    assert decide(meta, three) == (False, "expected dog<3, found 3")
    # a third dog below the counting threshold does not count
    assert decide(meta, two + [det("dog", (40, 0, 50, 10), 0.85)]) == (True, "")
    # shortfall and exclude fire together when both apply (exclude count 1)
    meta = {"tag": "counting", "prompt": "p", "include": [{"class": "dog", "count": 3}],
            "exclude": [{"class": "dog", "count": 2}]}
    assert decide(meta, two) == (False, "expected dog>=3, found 2\nexpected dog<2, found 2")


def test_exclude_counts_all_kept_detections_of_the_class():
    meta = {"tag": "single_object", "prompt": "p", "include": [], "exclude": [{"class": "cat", "count": 1}]}
    assert decide(meta, [det("dog", (0, 0, 5, 5))]) == (True, "")
    assert decide(meta, [det("cat", (0, 0, 5, 5)), det("cat", (9, 9, 20, 20))]) == (False, "expected cat<1, found 2")


def test_colour_pass_and_fail_on_top_detection_only():
    red_then_blue = [det("cup", (0, 0, 10, 10), 0.9, "red"), det("cup", (20, 0, 30, 10), 0.8, "blue")]
    assert decide(colors_prompt("red", "cup"), red_then_blue) == (True, "")
    # the red cup is only the second most confident: top-1 is blue, so the clause fails
    blue_then_red = [det("cup", (0, 0, 10, 10), 0.9, "blue"), det("cup", (20, 0, 30, 10), 0.8, "red")]
    assert decide(colors_prompt("red", "cup"), blue_then_red) == (False, "expected red cup>=1, found 0 red; and 1 blue")


def test_colour_count_must_be_met_by_all_top_objects():
    # colors.count("red") = 1 < count 2 fails; the tally lists colours in COLORS order (red before blue)
    dets = [det("cup", (0, 0, 10, 10), 0.9, "blue"), det("cup", (20, 0, 30, 10), 0.8, "red")]
    assert decide(colors_prompt("red", "cup", count=2), dets) == (
        False, "expected red cup>=2, found 1 red; and 1 red, 1 blue")
    both_red = [det("cup", (0, 0, 10, 10), 0.9, "red"), det("cup", (20, 0, 30, 10), 0.8, "red"),
                det("cup", (40, 0, 50, 10), 0.7, "green")]
    assert decide(colors_prompt("red", "cup", count=2), both_red) == (True, "")


def test_colors_of_is_called_with_the_top_count_detections():
    calls = []

    def colors_of(classname, found):
        calls.append((classname, [d.score for d in found]))
        return ["green"] * len(found)

    dets = [det("cup", (0, 0, 10, 10), 0.7), det("cup", (20, 0, 30, 10), 0.9), det("cup", (40, 0, 50, 10), 0.8)]
    assert decide(colors_prompt("green", "cup", count=2), dets, colors_of=colors_of) == (True, "")
    assert calls == [("cup", [0.9, 0.8])]
    assert decide(colors_prompt("red", "cup"), dets, colors_of=colors_of) == (
        False, "expected red cup>=1, found 0 red; and 1 green")


def test_colour_clause_without_colour_source_raises():
    with pytest.raises(ValueError, match="colors_of"):
        decide(colors_prompt("red", "cup"), [det("cup", (0, 0, 10, 10))])
    # no colour clause: colourless detections are fine
    assert decide(single("cup"), [det("cup", (0, 0, 10, 10))]) == (True, "")


def test_colors_of_must_return_one_colour_per_detection():
    with pytest.raises(ValueError, match="one colour per detection"):
        decide(colors_prompt("red", "cup"), [det("cup", (0, 0, 10, 10))], colors_of=lambda c, found: [])


def test_position_pass_and_fail():
    meta = position_prompt("dog", "left of", "cat")
    cat = det("cat", (100, 100, 150, 150))
    assert decide(meta, [cat, det("dog", (0, 100, 50, 150))]) == (True, "")
    assert decide(meta, [cat, det("dog", (200, 100, 250, 150))]) == (
        False, "expected dog left of target, found right of target")
    # two relations are joined in the fixed order left of, right of, above, below
    assert decide(meta, [cat, det("dog", (200, 200, 250, 250))]) == (
        False, "expected dog left of target, found right of and below target")
    # overlapping boxes: no relation at all (upstream prints an empty join)
    assert decide(meta, [cat, det("dog", (101, 100, 151, 150))]) == (
        False, "expected dog left of target, found  target")


def test_position_uses_top_detection_and_threshold_config():
    meta = position_prompt("dog", "left of", "cat")
    cat = det("cat", (100, 100, 150, 150))
    # the confident dog is on the right; a weaker one on the left is not examined
    dets = [cat, det("dog", (200, 100, 250, 150), 0.9), det("dog", (0, 100, 50, 150), 0.8)]
    assert decide(meta, dets)[0] is False
    # offset 30 px; margin 0.1 * (50 + 50) = 10 -> dx = -20/30 < -0.5 passes; margin 0.2 -> -10/30 fails
    near = [cat, det("dog", (70, 100, 120, 150))]
    assert decide(meta, near) == (True, "")
    assert decide(meta, near, cfg=RuleConfig(position_threshold=0.2)) == (
        False, "expected dog left of target, found  target")


def test_position_without_target():
    meta = position_prompt("dog", "left of", "cat")
    assert decide(meta, [det("dog", (0, 100, 50, 150))]) == (
        False, "expected cat>=1, found 0\nno target for dog to be left of")
    assert decide(meta, []) == (False, "expected cat>=1, found 0\nexpected dog>=1, found 0")


def test_position_against_every_target_object():
    meta = {"tag": "position", "prompt": "p",
            "include": [{"class": "cat", "count": 2}, {"class": "dog", "count": 1, "position": ["left of", 0]}]}
    cats = [det("cat", (100, 0, 150, 50), 0.9), det("cat", (100, 100, 150, 150), 0.8)]
    assert decide(meta, cats + [det("dog", (0, 50, 50, 100))]) == (True, "")
    # left of the first cat but only above the second: offset (20, -50), revised (10, -40) / 53.85
    assert decide(meta, cats[:1] + [det("cat", (-20, 100, 30, 150), 0.8), det("dog", (0, 50, 50, 100))]) == (
        False, "expected dog left of target, found above target")


def test_failed_clause_is_no_target_even_if_objects_exist():
    # group 0 fails its colour check, so the position clause finds no target (matched_groups[0] is None)
    meta = {"tag": "position", "prompt": "p",
            "include": [{"class": "cat", "count": 1, "color": "red"},
                        {"class": "dog", "count": 1, "position": ["left of", 0]}]}
    dets = [det("cat", (100, 100, 150, 150), color="blue"), det("dog", (0, 100, 50, 150), color="red")]
    assert decide(meta, dets) == (
        False, "expected red cat>=1, found 0 red; and 1 blue\nno target for dog to be left of")


def test_colour_failure_skips_position_check():
    meta = {"tag": "position", "prompt": "p",
            "include": [{"class": "cat", "count": 1},
                        {"class": "dog", "count": 1, "color": "red", "position": ["left of", 0]}]}
    # wrong colour and wrong side: only the colour reason is reported
    dets = [det("cat", (100, 100, 150, 150), color="blue"), det("dog", (200, 100, 250, 150), color="blue")]
    assert decide(meta, dets) == (False, "expected red dog>=1, found 0 red; and 1 blue")


# ----------------------------------------------------------------------------
# Output record

def test_details_json_format():
    detected = {"dog": [det("dog", (1, 2, 30, 40), 0.5)], "cat": [det("cat", (0, 0, 5, 5), 0.75),
                                                              det("cat", (5, 5, 9, 9), 0.25)]}
    assert details_json(detected) == ('{"dog": [[1.0, 2.0, 30.0, 40.0, 0.5]], '
                                      '"cat": [[0.0, 0.0, 5.0, 5.0, 0.75], [5.0, 5.0, 9.0, 9.0, 0.25]]}')
    assert details_json({}) == "{}"


def test_result_record_format():
    meta = single("dog")
    detected = {"dog": [det("dog", (1, 2, 3, 4), 0.5)]}
    record = result_record("out/00000/samples/0000.png", meta, True, "", detected)
    assert list(record) == ["filename", "tag", "prompt", "correct", "reason", "metadata", "details"]
    assert record["filename"] == "out/00000/samples/0000.png"
    assert record["tag"] == "single_object"
    assert record["prompt"] == "a photo of a dog"
    assert record["correct"] is True
    assert record["reason"] == ""
    assert record["metadata"] == ('{"tag": "single_object", "prompt": "a photo of a dog", '
                                  '"include": [{"class": "dog", "count": 1}]}')
    assert json.loads(record["details"]) == {"dog": [[1.0, 2.0, 3.0, 4.0, 0.5]]}
    json.dumps(record)  # the record itself is JSON-serialisable


# ----------------------------------------------------------------------------
# Official prompts: a perfect scene passes every one of them

def perfect_detections(meta):
    """Detections that satisfy ``meta``: each clause gets its own spot, positions are honoured."""
    offsets = {"left of": (-200, 0), "right of": (200, 0), "above": (0, -200), "below": (0, 200)}
    dets, spots = [], []
    for i, req in enumerate(meta["include"]):
        if "position" in req:
            rel, group = req["position"]
            dx, dy = offsets[rel]
            x, y = spots[group][0] + dx, spots[group][1] + dy
        else:
            x, y = 1000 + 400 * i, 1000
        spots.append((x, y))
        for k in range(req["count"]):
            dets.append(det(req["class"], (x + 3 * k, y, x + 3 * k + 40, y + 40), 0.95, req.get("color", "red")))
    return dets


def test_official_prompts_pass_with_perfect_detections():
    if not METADATA_FILE.exists():
        pytest.skip(f"official GenEval metadata not found at {METADATA_FILE}")
    metas = [json.loads(line) for line in METADATA_FILE.read_text().splitlines() if line.strip()]
    assert len(metas) == 553
    for meta in metas:
        assert decide(meta, perfect_detections(meta)) == (True, ""), meta["prompt"]
        assert decide(meta, [])[0] is False, meta["prompt"]
