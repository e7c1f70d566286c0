"""Tests of the evaluation CLI (geneval/evaluate.py) and the detection cache (geneval/cache.py).

Real data from the shapes world: scenes rendered to satisfy GenEval metadata records, scored
by the weight-free ``shapes`` detector, so every rendered image must come out correct.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from geneval import evaluate
from geneval.cache import DetectionCache, decode_mask, detection_from_json, detection_to_json, detector_key, \
    encode_mask
from geneval.config import GenEvalConfig
from geneval.detection import COLORS, Detection
from geneval.detectors import build_detector
from geneval.evaluate import load_config, main, run_evaluation
from geneval.layout import write_sample
from shapes.detect import quantize_colors
from shapes.render import render, sample_scene
from evaluate_fixtures import IMAGES_PER_PROMPT, TAGS, make_outdir, one_record_per_tag

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_FIELDS = ["filename", "tag", "prompt", "correct", "reason", "metadata", "details"]


def _run(outdir: Path, *extra: str) -> None:
    with pytest.warns(UserWarning, match="junk"):
        assert main([str(outdir), "detector=shapes", *extra]) == 0


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class DetectCounter:
    """Wraps geneval.evaluate.build_detector and counts the images each detector call sees."""

    def __init__(self, monkeypatch):
        self.builds = 0
        self.images = 0
        monkeypatch.setattr(evaluate, "build_detector", self._build)

    def _build(self, cfg, device, classes):
        self.builds += 1
        detector, classifier = build_detector(cfg, device, classes)
        counter = self

        class Counted:
            def detect(self, images):
                counter.images += len(images)
                return detector.detect(images)

        return Counted(), classifier


@pytest.fixture
def data(tmp_path):
    return make_outdir(tmp_path)


def test_scores_rendered_scenes_in_the_official_format(data, capsys):
    outdir = data["outdir"]
    _run(outdir)
    records = _lines(outdir / "results.jsonl")
    assert [r["filename"] for r in records] == data["scored"]  # sorted by folder number, then image
    assert all(list(r) == OFFICIAL_FIELDS + ["detector"] for r in records)  # upstream's fields, then the weights
    assert records[0]["detector"].startswith("shapes: ")
    by_name = {r["filename"]: r for r in records}
    assert all(r["correct"] and r["reason"] == "" for name, r in by_name.items() if name != data["wrong"])
    wrong = by_name[data["wrong"]]
    expected_class = data["metadata6"]["include"][0]["class"]
    assert not wrong["correct"] and wrong["reason"] == f"expected {expected_class}>=1, found 0"
    assert json.loads(wrong["metadata"]) == data["metadata6"]
    assert [r["tag"] for r in records[::IMAGES_PER_PROMPT]] == TAGS + ["single_object"]
    # counting prompt: exactly `count` boxes of the class survive the 0.9 threshold
    counting = records[2 * IMAGES_PER_PROMPT]
    clause = json.loads(counting["metadata"])["include"][0]
    assert [len(v) for v in json.loads(counting["details"]).values()] == [clause["count"]]
    errors = _lines(outdir / "results.errors.jsonl")
    assert [e["filename"] for e in errors] == data["errors"]
    assert errors[0]["error"].startswith("UnidentifiedImageError: cannot identify image file")
    assert errors[1]["error"] == "OSError: image file is truncated"
    assert "00007/metadata.jsonl: not one JSON object" in errors[2]["error"]
    captured = capsys.readouterr()
    assert "WARNING: 3 image(s)/folder(s) could not be scored" in captured.err
    # 13 of 14 images correct; every tag is 1.0 except single_object (3 of 4)
    summary = (outdir / "summary.md").read_text()
    assert "| out | 0.75 | 1.00 | 1.00 | 1.00 | 1.00 | 1.00 | 0.96 |" in summary
    assert "Overall score (avg. over tasks): 0.95833" in captured.out
    assert not [p for p in outdir.iterdir() if p.name.startswith(".results")]  # part files cleaned up


def test_rerun_uses_the_cache_and_writes_the_same_file(data, monkeypatch):
    outdir = data["outdir"]
    _run(outdir)
    first = (outdir / "results.jsonl").read_bytes()
    counter = DetectCounter(monkeypatch)
    _run(outdir)
    assert (counter.builds, counter.images) == (0, 0)  # nothing detected, no model even built
    assert (outdir / "results.jsonl").read_bytes() == first  # rewritten whole: no duplicated lines
    # A deleted cache entry and a changed image are the only ones detected again.
    cache_dir = next((outdir / ".geneval_cache").glob("shapes-*"))
    (cache_dir / "00001" / "0000.png.json").unlink()
    rng = np.random.default_rng(5)
    write_sample(outdir, 0, 1, render(sample_scene(one_record_per_tag()[0], rng)))
    with pytest.warns(UserWarning, match="junk"):
        report = run_evaluation(outdir, GenEvalConfig(detector="shapes"))
    assert (counter.images, report.num_detected, report.num_cached) == (2, 2, 12)
    assert len(_lines(outdir / "results.jsonl")) == len(data["scored"])


def test_rescoring_with_other_rules_runs_no_detector(data, monkeypatch):
    outdir = data["outdir"]
    _run(outdir)
    counter = DetectCounter(monkeypatch)
    # Rendered shapes score exactly 1.0, so "score > 1.0" keeps nothing: every image fails.
    _run(outdir, "threshold=1.0", "counting_threshold=1.0", "--outfile", str(outdir / "strict.jsonl"))
    assert counter.images == 0
    records = _lines(outdir / "strict.jsonl")
    assert len(records) == len(data["scored"]) and not any(r["correct"] for r in records)
    first = json.loads(records[0]["metadata"])["include"][0]["class"]
    assert records[0]["reason"] == f"expected {first}>=1, found 0"
    assert (outdir / "strict.summary.md").is_file()


def test_killed_run_keeps_old_results_and_resumes(data, monkeypatch):
    outdir = data["outdir"]
    _run(outdir)
    first = (outdir / "results.jsonl").read_bytes()
    cache_root = outdir / ".geneval_cache"
    for entry in cache_root.rglob("*.png.json"):
        entry.unlink()

    class Killed(Exception):
        pass

    calls = []

    def dying_build(cfg, device, classes):
        detector, classifier = build_detector(cfg, device, classes)

        class Dying:
            def detect(self, images):
                calls.append(len(images))
                if len(calls) == 4:
                    raise Killed("node preempted")
                return detector.detect(images)

        return Dying(), classifier

    monkeypatch.setattr(evaluate, "build_detector", dying_build)
    with pytest.raises(Killed), pytest.warns(UserWarning, match="junk"):
        main([str(outdir), "detector=shapes", "batch_size=1"])
    assert (outdir / "results.jsonl").read_bytes() == first
    assert len(list(cache_root.rglob("*.png.json"))) == 3  # the images finished before the kill
    monkeypatch.undo()
    counter = DetectCounter(monkeypatch)
    _run(outdir)
    assert counter.images == len(data["scored"]) - 3
    assert (outdir / "results.jsonl").read_bytes() == first


def test_torchrun_two_processes_match_one_process(data):
    outdir = data["outdir"]
    _run(outdir)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    outfile = data["outdir"].parent / "ddp" / "results.jsonl"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "geneval.evaluate", str(outdir), "detector=shapes", "device=cpu", "--outfile", str(outfile),
               "--cache-dir", str(data["outdir"].parent / "ddp_cache")]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert outfile.read_bytes() == (outdir / "results.jsonl").read_bytes()
    assert (outfile.parent / "results.errors.jsonl").read_bytes() == (outdir / "results.errors.jsonl").read_bytes()
    assert "14 images scored (14 detected, 0 from cache)" in result.stdout
    assert sorted(p.name for p in outfile.parent.iterdir()) == ["results.errors.jsonl", "results.jsonl", "summary.md"]


# ----------------------------------------------------------------------------
# Colour classifier path (as the hf backend: detections without colour, CLIP-like classifier)

class PaletteColors:
    """A stand-in for CLIP: the palette colour most of the masked pixels have."""

    def __init__(self):
        self.calls = 0

    def classify(self, image, detections, classname):
        self.calls += 1
        palette_index = quantize_colors(image)
        return [COLORS[np.bincount(palette_index[d.mask]).argmax() - 1] for d in detections]


def test_colours_are_classified_once_then_cached(data, monkeypatch):
    outdir = data["outdir"]
    classifier = PaletteColors()

    def colourless_build(cfg, device, classes):
        detector, _ = build_detector(GenEvalConfig(detector="shapes"), device, classes)

        class Colourless:
            def detect(self, images):
                return [[Detection(d.label, d.box, d.score, d.mask, None) for d in dets]
                        for dets in detector.detect(images)]

        return Colourless(), classifier

    monkeypatch.setattr(evaluate, "build_detector", colourless_build)
    _run(outdir)
    records = _lines(outdir / "results.jsonl")
    assert sum(r["correct"] for r in records) == len(data["scored"]) - 1  # same decisions as the shapes colours
    # colors (1 clause) and color_attr (2 clauses) prompts, 2 images each: 6 classifier calls
    assert classifier.calls == 6
    _run(outdir)
    assert classifier.calls == 6
    _run(outdir, "bgcolor=original")  # other colour settings: colours again, from cached masks
    assert classifier.calls == 12
    assert _lines(outdir / "results.jsonl") == records


# ----------------------------------------------------------------------------
# Cache and config units

def test_mask_encoding_is_lossless():
    rng = np.random.default_rng(1)
    mask = np.zeros((37, 50), dtype=bool)
    mask[5:20, 30:47] = rng.random((15, 17)) > 0.5
    encoded = encode_mask(mask)
    assert encoded["offset"][1] >= 30 and encoded["size"][0] <= 15
    np.testing.assert_array_equal(decode_mask(encoded), mask)
    empty = np.zeros((4, 6), dtype=bool)
    np.testing.assert_array_equal(decode_mask(encode_mask(empty)), empty)
    det = Detection("star", (1.0, 2.0, 3.5, 4.0), 0.123456789, mask, "red")
    back = detection_from_json(json.loads(json.dumps(detection_to_json(det))))
    assert (back.label, back.box, back.score, back.color) == ("star", (1.0, 2.0, 3.5, 4.0), 0.123456789, "red")
    np.testing.assert_array_equal(back.mask, mask)


def test_cache_key_covers_the_detector_and_its_weights(tmp_path):
    shapes = detector_key(GenEvalConfig(detector="shapes", detector_path="a"))
    assert shapes == detector_key(GenEvalConfig(detector="shapes", detector_path="b"))  # no weights
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"1234")
    before = detector_key(GenEvalConfig(detector="hf", detector_path=str(weights)))
    assert before != detector_key(GenEvalConfig(detector="hf", detector_path="facebook/other"))
    (weights / "model.safetensors").write_bytes(b"123456")
    assert detector_key(GenEvalConfig(detector="hf", detector_path=str(weights))) != before
    assert DetectionCache(tmp_path, shapes).dir != DetectionCache(tmp_path, before).dir


def test_load_config_merges_yaml_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("seed: 3\ngeneval:\n  detector: shapes\n  threshold: 0.4\n")
    cfg = load_config(str(path), ["threshold=0.5", "max_objects=4", "crop=false"])
    assert cfg == GenEvalConfig(detector="shapes", threshold=0.5, max_objects=4, crop=False)
    with pytest.raises(ValueError, match="unknown GenEval setting.*treshold"):
        load_config(None, ["treshold=0.5"])
    with pytest.raises(ValueError, match="max_objects"):
        load_config(None, ["max_objects=many"])
    with pytest.raises(ValueError, match="key=value"):
        load_config(None, ["shapes"])


def test_empty_outdir_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ValueError, match="no images to score"):
        run_evaluation(tmp_path, GenEvalConfig(detector="shapes"))
    assert main([str(tmp_path), "detector=shapes"]) == 2  # the CLI: one line, exit 2
    assert "no images to score" in capsys.readouterr().err
