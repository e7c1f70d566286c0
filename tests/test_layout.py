"""Tests of the GenEval output layout (geneval/layout.py): paths, atomic writers, scanning."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from geneval import layout
from geneval.layout import (PromptFolder, atomic_write_bytes, atomic_write_text, prompt_dir, sample_done,
                            sample_path, scan_outdir, write_metadata, write_png, write_sample)

METADATA = {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"}


def _image(value: int = 0) -> np.ndarray:
    image = np.zeros((8, 6, 3), dtype=np.uint8)
    image[2, 3] = (value, 255 - value, 7)
    return image


def test_paths_follow_the_official_layout(tmp_path):
    assert prompt_dir(tmp_path, 7) == tmp_path / "00007"
    assert sample_path(tmp_path, 7, 3) == tmp_path / "00007" / "samples" / "0003.png"
    assert sample_path("out", 12345, 12) == layout.Path("out/12345/samples/0012.png")


def test_write_sample_round_trips_pixels_and_marks_done(tmp_path):
    assert not sample_done(tmp_path, 0, 1)
    path = write_sample(tmp_path, 0, 1, _image(200))
    assert path == tmp_path / "00000" / "samples" / "0001.png"
    assert sample_done(tmp_path, 0, 1)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), _image(200))
    assert os.listdir(path.parent) == ["0001.png"]  # no temporary left behind


def test_write_png_accepts_pil_and_rejects_other_arrays(tmp_path):
    write_png(tmp_path / "a.png", Image.fromarray(_image(9)))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), _image(9))
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "b.png", _image().astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "b.png", _image()[..., 0])
    assert not (tmp_path / "b.png").exists()


def test_sample_done_ignores_and_removes_tmp_leftovers(tmp_path):
    samples = tmp_path / "00004" / "samples"
    samples.mkdir(parents=True)
    leftover = samples / ".0002.png.123.abcd.tmp"  # what a killed atomic write leaves
    leftover.write_bytes(b"half a png")
    other = samples / ".0003.png.123.abcd.tmp"  # another sample's leftover is not ours to delete
    other.write_bytes(b"x")
    assert not sample_done(tmp_path, 4, 2)
    assert not leftover.exists()
    assert other.exists()


def test_failed_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.jsonl"
    atomic_write_text(path, "old\n")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(layout.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new\n")
    monkeypatch.undo()
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # fails inside the write itself
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["results.jsonl"]


def test_write_metadata_is_read_back_with_json_load(tmp_path):
    path = write_metadata(tmp_path, 3, METADATA)
    assert path == tmp_path / "00003" / "metadata.jsonl"
    with open(path) as f:
        assert json.load(f) == METADATA
    assert path.read_text().count("\n") == 1  # one JSON line, as in evaluation_metadata.jsonl


def _folder(outdir, name: str, metadata_text: str | None, images=("0000.png",)) -> None:
    folder = outdir / name
    (folder / "samples").mkdir(parents=True)
    if metadata_text is not None:
        (folder / "metadata.jsonl").write_text(metadata_text)
    for image in images:
        (folder / "samples" / image).write_bytes(b"png")


def test_scan_outdir_sorts_digit_folders_and_filters_images(tmp_path):
    _folder(tmp_path, "10", json.dumps(METADATA), images=["10.png", "2.png", "grid.png", "abc.png",
                                                          ".0001.png.1.ab.tmp", "0003.png.bak"])
    _folder(tmp_path, "0002", json.dumps(METADATA, indent=4))  # 4-digit name, indented metadata
    _folder(tmp_path, "00001", json.dumps(METADATA))
    (tmp_path / "results.jsonl").write_text("")  # files at the top level are not folders
    (tmp_path / ".geneval_cache").mkdir()  # hidden: skipped without a warning
    folders = scan_outdir(tmp_path)
    assert [(f.name, f.index) for f in folders] == [("00001", 1), ("0002", 2), ("10", 10)]
    assert all(f.metadata == METADATA and f.error is None for f in folders)
    # upstream's re.match(r"\d+\.png") is anchored at the start only, so "0003.png.bak" counts
    assert folders[2].images == ["2.png", "0003.png.bak", "10.png"]
    assert folders[2].image_path("2.png") == tmp_path / "10" / "samples" / "2.png"


def test_scan_outdir_warns_about_non_digit_folders(tmp_path):
    _folder(tmp_path, "00000", json.dumps(METADATA))
    (tmp_path / "junk").mkdir()
    (tmp_path / "v2").mkdir()
    with pytest.warns(UserWarning, match=r"\['junk', 'v2'\]"):
        folders = scan_outdir(tmp_path)
    assert [f.name for f in folders] == ["00000"]


def test_scan_outdir_reports_bad_folders_without_losing_others(tmp_path):
    _folder(tmp_path, "00000", json.dumps(METADATA))
    _folder(tmp_path, "00001", None)  # no metadata
    _folder(tmp_path, "00002", json.dumps(METADATA) + "\n" + json.dumps(METADATA))  # two records
    _folder(tmp_path, "00003", json.dumps(["a", "list"]))
    (tmp_path / "00004").mkdir()
    (tmp_path / "00004" / "metadata.jsonl").write_text(json.dumps(METADATA))  # no samples/
    folders = scan_outdir(tmp_path)
    assert folders[0] == PromptFolder("00000", tmp_path / "00000", 0, METADATA, ["0000.png"], None)
    errors = {f.name: f.error for f in folders[1:]}
    assert all(f.metadata is None and f.images == [] for f in folders[1:])
    assert "no metadata.jsonl" in errors["00001"] and "00001" in errors["00001"]
    assert "not one JSON object" in errors["00002"] and "Extra data" in errors["00002"]
    assert "expected a GenEval metadata object" in errors["00003"]
    assert "no samples/ folder" in errors["00004"]


def test_scan_outdir_rejects_a_missing_outdir(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        scan_outdir(tmp_path / "nope")
