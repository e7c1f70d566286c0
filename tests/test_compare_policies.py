"""scripts/compare_policies.py on a tiny setting: tiny random generator, shipped shapes judges, 7 prompts,
one image each, budgets best-of-2 and -3. Checks the budget matching, the report files and that a rerun
resumes (no image is rewritten)."""
from __future__ import annotations

import json
import math

import pytest

from conftest import write_shapes_suite
from geneval.summary import overall_standard_error, summarize
from scripts import compare_policies


def test_overall_standard_error_by_hand():
    records = [{"tag": t, "correct": c, "metadata": f"{t}{i}"} for i, (t, c) in
               enumerate([("colors", True), ("colors", False), ("counting", True), ("counting", True)])]
    assert overall_standard_error(summarize(records)) == pytest.approx(math.sqrt(0.25 / 2) / 2)
    assert compare_policies.spearman([1, 2, 3], [False, False, True]) == pytest.approx(math.sqrt(3) / 2)
    assert compare_policies.spearman([1, 1, 1], [False, True, True]) is None


def test_compare_policies_tiny(tiny_weights, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    _, prompts_file, metadata_file = write_shapes_suite(tmp_path, slice(0, 73, 12))
    out = tmp_path / "out"
    argv = ["--out", str(out), "--configs", "configs/shapes.yaml", "--policies", "none", "orm_ft", "confidence",
            "progressive", "--budgets", "2", "3", "--eval-num", "1", "--probe", "2", "--corr-n", "2",
            f"run.prompts_file={prompts_file}", f"run.metadata_file={metadata_file}",
            f"generation.weights={tiny_weights}", "generation.num_steps=4", "search.blocks=2"]
    assert compare_policies.main(argv) == 0
    report = json.loads((out / "results.json").read_text())
    rows = report["orders"]["mask"]["rows"]
    assert set(rows) == {"none", "orm_ft", "confidence", "progressive"}
    # 4 mask steps per path: best-of-M spends 4M; progressive's mask lookahead is free, so N = M;
    # confidence (3 -> 2 paths after step 2 of 4) fits N=2 in 8 and N=4 (4*2 + 2*2 = 12) in 12.
    assert [(rows[p]["2"]["n"], rows[p]["2"]["forwards"], rows[p]["3"]["n"], rows[p]["3"]["forwards"])
            for p in ("none", "orm_ft", "progressive", "confidence")] == \
        [(1, 4, 1, 4), (2, 8, 3, 12), (2, 8, 3, 12), (2, 6, 4, 12)]
    for by_budget in rows.values():
        for row in by_budget.values():
            assert row["images"] == 7 and 0 <= row["overall"] <= 1 and row["se"] >= 0 and row["seconds"] > 0
    correlation = report["orders"]["mask"]["correlation"]
    assert correlation["paths"] == 14 and all(len(correlation[k]) == 4 for k in compare_policies.CORRELATED)
    assert correlation["orm_ft"][:3] == [None] * 3
    table = (out / "table.md").read_text()
    assert "| progressive | " in table and "Spearman" in table and "best-of-3 (orm_ft)" in table
    assert (out / "pareto_mask.png").stat().st_size > 0
    # A rerun resumes: every image is already there, nothing is rewritten, the report is the same.
    images = {p: p.stat().st_mtime_ns for p in out.rglob("*.png") if p.parent.name == "samples"}
    assert compare_policies.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in images} == images
    again = json.loads((out / "results.json").read_text())
    assert again["orders"] == report["orders"]
