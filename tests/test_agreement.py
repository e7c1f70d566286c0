"""Tests of the verdict-agreement command (geneval/detectors/agreement.py) on a tiny shapes-world folder."""
from __future__ import annotations

import json

import numpy as np
import pytest

from geneval.detectors.agreement import compare_verdicts, main
from geneval.layout import write_metadata, write_sample
from shapes.render import render, sample_scene
from evaluate_fixtures import one_record_per_tag


def _record(name, tag, correct):
    return {"filename": name, "tag": tag, "correct": correct, "metadata": json.dumps({"tag": tag, "n": name})}


def test_compare_verdicts_counts_flips_per_tag():
    a = [_record("1", "counting", True), _record("2", "counting", False), _record("3", "colors", True),
         _record("4", "colors", True)]
    b = [_record("1", "counting", False), _record("2", "counting", False), _record("3", "colors", True),
         _record("5", "colors", False)]  # 4 and 5 are not in both: left out
    result = compare_verdicts(a, b)
    assert (result.images, result.agree, result.a_only_correct, result.b_only_correct) == (3, 2, 1, 0)
    assert result.rate == pytest.approx(2 / 3)
    assert result.rate_se == pytest.approx(((2 / 3) * (1 / 3) / 3) ** 0.5)
    assert result.per_tag == {"counting": (1, 2), "colors": (1, 1)}
    assert (result.overall_a, result.overall_b) == (pytest.approx(0.75), pytest.approx(0.5))
    with pytest.raises(ValueError, match="no image in common"):
        compare_verdicts(a, [_record("9", "colors", True)])


def test_command_scores_both_settings_and_reports(tmp_path, capsys):
    outdir = tmp_path / "out"
    rng = np.random.default_rng(0)
    for index, metadata in enumerate(one_record_per_tag()):
        write_metadata(outdir, index, metadata)
        for sample in range(2):
            write_sample(outdir, index, sample, render(sample_scene(metadata, rng)))
    # Rendered shapes score exactly 1.0: threshold 0.5 keeps them all, 1.0 (strict ">") none.
    report = tmp_path / "agreement.json"
    assert main([str(outdir), "--a", "detector=shapes", "--b", "detector=shapes", "threshold=1.0",
                 "counting_threshold=1.0", "--a-name", "loose", "--b-name", "strict", "--json", str(report)]) == 0
    figures = json.loads(report.read_text())
    assert figures["images"] == 12 and figures["agree"] == 0 and figures["a_only_correct"] == 12
    assert figures["overall_a"] == 1.0 and figures["overall_b"] == 0.0
    assert all((outdir / ".geneval_agreement" / f"{name}.jsonl").is_file() for name in ("loose", "strict"))
    assert "0/12 images = 0.00%" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="both settings"):
        main([str(outdir), "--a", "detector=shapes", "--b", "detector=shapes", "--a-name", "x", "--b-name", "x"])
