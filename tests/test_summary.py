"""GenEval aggregation (geneval.summary) on hand-made records, against hand-computed scores.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_summary.py
"""
from __future__ import annotations

import json
import re

import pytest

from geneval.detection import Detection
from geneval.rules import result_record
from geneval.summary import GENEVAL_TAGS, format_summary, load_results, main, markdown_table, summarize


def record(tag, prompt, correct):
    meta = {"tag": tag, "prompt": prompt, "include": [{"class": "dog", "count": 1}]}
    return {"filename": f"{prompt}.png", "tag": tag, "prompt": prompt, "correct": correct, "reason": "",
            "metadata": json.dumps(meta), "details": "{}"}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def full_run():
    """One prompt per GenEval tag, two images each; 1, 2, 0, 1, 2, 1 correct images."""
    records = []
    for tag, num_correct in zip(GENEVAL_TAGS, [1, 2, 0, 1, 2, 1]):
        records += [record(tag, f"{tag} prompt", i < num_correct) for i in range(2)]
    return records


# ----------------------------------------------------------------------------
# load_results

def test_load_results_reads_lines_and_skips_blank(tmp_path):
    records = [record("colors", "a", True), record("colors", "b", False)]
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(records[0]) + "\n\n" + json.dumps(records[1]) + "\n")
    assert load_results(path) == records


def test_load_results_names_file_and_line_on_bad_json(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(record("colors", "a", True)) + "\n" + '{"tag": "colors", "corr\n')
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}:2: not valid JSON"):
        load_results(path)


def test_load_results_rejects_non_objects_and_missing_fields(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [[1, 2]])
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}:1: expected a JSON object"):
        load_results(path)
    path = write_jsonl(tmp_path / "b.jsonl", [record("colors", "a", True), {"tag": "colors", "correct": True}])
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}:2: record lacks \['metadata'\]"):
        load_results(path)


def test_records_from_result_record_round_trip(tmp_path):
    meta = {"tag": "single_object", "prompt": "a photo of a dog", "include": [{"class": "dog", "count": 1}]}
    detected = {"dog": [Detection("dog", (0, 0, 10, 10), 0.9)]}
    records = [result_record(f"{i}.png", meta, i == 0, "", detected) for i in range(4)]
    summary = summarize(load_results(write_jsonl(tmp_path / "r.jsonl", records)))
    assert (summary.total_images, summary.total_prompts) == (4, 1)
    assert summary.image_accuracy == 0.25
    assert summary.prompt_accuracy == 1.0


# ----------------------------------------------------------------------------
# summarize

def test_overall_is_macro_average_over_tags():
    # single_object: 3/3 correct, position: 0/1 correct.
    records = [record("single_object", f"s{i}", True) for i in range(3)] + [record("position", "p", False)]
    summary = summarize(records)
    assert summary.image_accuracy == 0.75          # micro: 3 / 4 images
    assert summary.overall == 0.5                  # macro: (1.0 + 0.0) / 2 tags
    assert summary.tag_accuracy == {"single_object": 1.0, "position": 0.0}
    assert summary.tag_counts == {"single_object": (3, 3), "position": (0, 1)}


def test_prompt_accuracy_counts_prompts_with_any_correct_image():
    records = [record("colors", "a", True), record("colors", "a", False),
               record("colors", "b", False), record("colors", "b", False)]
    summary = summarize(records)
    assert summary.total_images == 4
    assert summary.total_prompts == 2
    assert summary.image_accuracy == 0.25
    assert summary.prompt_accuracy == 0.5


def test_prompts_are_grouped_by_metadata_string():
    # same prompt text with different metadata strings are two prompts (upstream groupby('metadata'))
    a = record("counting", "same", True)
    b = dict(record("counting", "same", False), metadata=json.dumps({"tag": "counting", "prompt": "same"}))
    assert summarize([a, b]).total_prompts == 2


def test_tags_in_order_of_first_appearance():
    records = [record("position", "p", True), record("colors", "c", False), record("position", "q", False)]
    summary = summarize(records)
    assert list(summary.tag_accuracy) == ["position", "colors"]
    assert summary.tag_accuracy == {"position": 0.5, "colors": 0.0}


def test_missing_tags():
    summary = summarize([record("colors", "c", True), record("single_object", "s", True)])
    assert summary.missing_tags == ["two_object", "counting", "position", "color_attr"]
    assert summarize(full_run()).missing_tags == []


def test_summarize_rejects_empty_and_bad_fields():
    with pytest.raises(ValueError, match="no records"):
        summarize([])
    with pytest.raises(ValueError, match="expected a bool"):
        summarize([record("colors", "c", 1)])
    with pytest.raises(ValueError, match="JSON string"):
        summarize([dict(record("colors", "c", True), metadata={"tag": "colors"})])


# ----------------------------------------------------------------------------
# format_summary / markdown_table

def test_format_summary_matches_upstream_layout():
    # per tag: 1/2, 2/2, 0/2, 1/2, 2/2, 1/2 -> overall 3.5 / 6 = 0.58333; images 7/12 = 58.33%;
    # prompts (one per tag): 5 of 6 have a correct image = 83.33%
    expected = "\n".join([
        "Summary",
        "=======",
        "Total images: 12",
        "Total prompts: 6",
        "% correct images: 58.33%",
        "% correct prompts: 83.33%",
        "",
        "Task breakdown",
        "==============",
        "single_object    = 50.00% (1 / 2)",
        "two_object       = 100.00% (2 / 2)",
        "counting         = 0.00% (0 / 2)",
        "colors           = 50.00% (1 / 2)",
        "position         = 100.00% (2 / 2)",
        "color_attr       = 50.00% (1 / 2)",
        "",
        "Overall score (avg. over tasks): 0.58333",
        "Standard error of the overall: 0.10206 (tags as independent binomials)",
    ])
    assert format_summary(summarize(full_run())) == expected


def test_format_summary_warns_about_missing_tags():
    text = format_summary(summarize([record("colors", "c", True), record("position", "p", False)]))
    assert text.splitlines()[-3] == "Overall score (avg. over tasks): 0.50000"
    assert text.splitlines()[-2] == "Standard error of the overall: 0.00000 (tags as independent binomials)"
    assert text.splitlines()[-1].startswith(
        "WARNING: missing GenEval tags single_object, two_object, counting, color_attr: "
        "the overall score averages only 2 tasks")


def test_markdown_table():
    partial = summarize([record("colors", "c", True), record("position", "p", False), record("position", "q", True)])
    expected = "\n".join([
        "| Method | Single obj | Two obj | Counting | Colors | Position | Color attr | Overall |",
        "|---|---|---|---|---|---|---|---|",
        "| full | 0.50 | 1.00 | 0.00 | 0.50 | 1.00 | 0.50 | 0.58 |",
        "| partial | - | - | - | 1.00 | 0.50 | - | 0.75 |",
    ])
    full = summarize(full_run())
    assert markdown_table({"full": full, "partial": partial}) == expected
    assert markdown_table([("full", full), ("partial", partial)]) == expected


# ----------------------------------------------------------------------------
# CLI

def test_main_prints_summary_and_markdown(tmp_path, capsys):
    full = write_jsonl(tmp_path / "full.jsonl", full_run())
    part = write_jsonl(tmp_path / "part.jsonl", [record("colors", "c", True)])
    assert main([str(full), str(part), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert f"# {full}" in out and f"# {part}" in out
    assert "Overall score (avg. over tasks): 0.58333" in out
    assert "WARNING: missing GenEval tags single_object, two_object, counting, position, color_attr" in out
    assert out.rstrip().endswith(f"| {part} | - | - | - | 1.00 | - | - | 1.00 |")


def test_main_single_file_has_no_header_or_table(tmp_path, capsys):
    path = write_jsonl(tmp_path / "r.jsonl", full_run())
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert out == format_summary(summarize(full_run())) + "\n\n"
