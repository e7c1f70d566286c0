"""Tests of the GenEval prompt-suite generator and loaders (geneval/suites.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from geneval import suites
from geneval.suites import (
    COCO_CLASSES,
    check_prompts_match,
    coco_plural,
    coco_vocabulary,
    deduplicate,
    enumerate_records,
    generate_suite,
    load_metadata,
    load_prompts,
    main,
    sample_heldin,
    shapes_vocabulary,
    SHAPES_PROMPTS_PER_TAG,
    tag_counts,
    training_pool,
    with_article,
)

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = REPO.parent / "shared" / "geneval"
COMMITTED = REPO / "geneval" / "prompts"


@pytest.fixture(scope="module")
def shapes_suite() -> list[dict]:
    return generate_suite(shapes_vocabulary(), num_per_tag=SHAPES_PROMPTS_PER_TAG)


@pytest.fixture(scope="module")
def shapes_pool(shapes_suite) -> list[dict]:
    return training_pool(shapes_vocabulary(), shapes_suite)


def _official_dir() -> Path:
    if not OFFICIAL.is_dir():
        pytest.skip(f"official GenEval prompt files not found at {OFFICIAL}")
    return OFFICIAL


def _files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir() if path.is_file()}


# --- official suite ---------------------------------------------------------------------------

def test_coco_classes_match_official_object_names():
    names = (_official_dir() / "object_names.txt").read_text().splitlines()
    assert COCO_CLASSES == names


def test_coco_suite_is_byte_identical_to_official(tmp_path):
    official = _official_dir()
    main(["--vocab", "coco", "--output-dir", str(tmp_path)])
    for name in ("generation_prompts.txt", "evaluation_metadata.jsonl"):
        assert (tmp_path / name).read_bytes() == (official / name).read_bytes(), name


def test_coco_tag_counts():
    # GenEval's shipped suite: 553 prompts, duplicates removed from two_object and colors.
    counts = tag_counts(generate_suite(coco_vocabulary()))
    assert counts == {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94,
                      "position": 100, "color_attr": 100}


def test_coco_suite_never_colours_person():
    for record in generate_suite(coco_vocabulary()):
        for clause in record["include"]:
            assert not (clause["class"] == "person" and "color" in clause), record["prompt"]


# --- committed files never drift from the generator --------------------------------------------

@pytest.mark.parametrize("vocab, subdir", [("coco", ""), ("shapes", "shapes")])
def test_committed_files_equal_fresh_generation(tmp_path, vocab, subdir):
    main(["--vocab", vocab, "--output-dir", str(tmp_path)])
    fresh = _files(tmp_path)
    assert _files(COMMITTED / subdir) == fresh, f"regenerate with: python -m geneval.suites --vocab {vocab}"


def test_shapes_cli_writes_all_files(tmp_path):
    main(["--vocab", "shapes", "--output-dir", str(tmp_path)])
    assert sorted(_files(tmp_path)) == ["evaluation_metadata.jsonl", "generation_prompts.txt",
                                        "heldin_metadata.jsonl", "heldin_prompts.txt", "train_metadata.jsonl"]
    check_prompts_match(load_prompts(tmp_path / "heldin_prompts.txt"), load_metadata(tmp_path / "heldin_metadata.jsonl"))


# --- templates ---------------------------------------------------------------------------------

def test_articles_and_plurals_follow_upstream_rules():
    assert with_article("orange") == "an orange"
    assert with_article("umbrella") == "an umbrella"
    assert with_article("yellow") == "a yellow"
    assert with_article("hot dog") == "a hot dog"
    assert coco_plural("bus") == "buses"
    assert coco_plural("skis") == "skises"  # upstream's rule, kept for byte-exactness
    assert coco_plural("sheep") == "sheeps"


def test_record_layouts():
    assert suites.counting_record("cross", "crosses", 3) == {
        "tag": "counting", "include": [{"class": "cross", "count": 3}],
        "exclude": [{"class": "cross", "count": 4}], "prompt": "a photo of three crosses"}
    assert json.dumps(suites.position_record("star", "above", "circle")) == (
        '{"tag": "position", "include": [{"class": "circle", "count": 1}, '
        '{"class": "star", "count": 1, "position": ["above", 0]}], "prompt": "a photo of a star above a circle"}')
    assert suites.color_attr_record("square", "orange", "star", "red")["prompt"] == \
        "a photo of an orange square and a red star"


def test_deduplicate_keeps_first_and_ignores_key_order():
    first = {"tag": "colors", "prompt": "p", "include": [{"class": "a", "count": 1}]}
    reordered = {"include": [{"count": 1, "class": "a"}], "prompt": "p", "tag": "colors"}
    other = {"tag": "colors", "prompt": "q", "include": [{"class": "a", "count": 1}]}
    assert deduplicate([first, reordered, other, first]) == [first, other]


def test_seed_changes_the_suite():
    assert generate_suite(coco_vocabulary(), seed=1) != generate_suite(coco_vocabulary(), seed=43)


# --- shapes: evaluation suite, training pool, held-in suite --------------------------------------

def test_shapes_enumeration_counts():
    # 6 shapes, 10 colours, 4 relations, counts 2..4, ordered pairs of distinct shapes/colours.
    assert tag_counts(enumerate_records(shapes_vocabulary())) == {
        "single_object": 6, "two_object": 6 * 5, "counting": 6 * 3, "colors": 6 * 10,
        "position": 6 * 5 * 4, "color_attr": 6 * 5 * 10 * 9}


def test_shapes_suite_uses_every_shape_once_for_single_object(shapes_suite):
    singles = [r["include"][0]["class"] for r in shapes_suite if r["tag"] == "single_object"]
    assert sorted(singles) == sorted(shapes_vocabulary().classes)


def test_training_pool_is_disjoint_from_eval_and_completes_it(shapes_suite, shapes_pool):
    eval_prompts = {r["prompt"] for r in shapes_suite}
    pool_prompts = [r["prompt"] for r in shapes_pool]
    assert eval_prompts.isdisjoint(pool_prompts)
    assert len(set(pool_prompts)) == len(pool_prompts)
    every = {r["prompt"] for r in enumerate_records(shapes_vocabulary())}
    assert eval_prompts | set(pool_prompts) == every
    assert len(pool_prompts) == len(every) - len(eval_prompts)


def test_heldin_is_a_capped_per_tag_subset_of_pool(shapes_pool):
    heldin = sample_heldin(shapes_pool, seed=43, max_per_tag=16)
    assert all(record in shapes_pool for record in heldin)
    pool_counts = tag_counts(shapes_pool)
    assert tag_counts(heldin) == {tag: min(16, n) for tag, n in pool_counts.items()}
    assert sample_heldin(shapes_pool, seed=43, max_per_tag=16) == heldin


# --- loaders -----------------------------------------------------------------------------------

def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_loaders_round_trip(tmp_path):
    records = generate_suite(shapes_vocabulary())[:5]
    suites.write_suite(tmp_path, records)
    metadata = load_metadata(tmp_path / "evaluation_metadata.jsonl")
    assert metadata == records
    assert load_prompts(tmp_path / "generation_prompts.txt") == [r["prompt"] for r in records]


def test_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_metadata(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="does not exist"):
        load_prompts(tmp_path / "nope.txt")


def test_empty_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="is empty"):
        load_metadata(_write(tmp_path / "m.jsonl", ""))
    with pytest.raises(ValueError, match="is empty"):
        load_prompts(_write(tmp_path / "p.txt", ""))


def test_bad_json_names_file_and_line(tmp_path):
    good = json.dumps(suites.single_object_record("star"))
    path = _write(tmp_path / "m.jsonl", f"{good}\n{good}\n{{not json\n")
    with pytest.raises(ValueError, match=r"m\.jsonl:3: malformed JSON"):
        load_metadata(path)


def test_missing_field_names_line_and_field(tmp_path):
    path = _write(tmp_path / "m.jsonl", '{"tag": "single_object", "prompt": "a photo of a star"}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl:1: missing required field\(s\) \['include'\]"):
        load_metadata(path)


def test_blank_line_is_reported(tmp_path):
    path = _write(tmp_path / "p.txt", "a photo of a star\n\na photo of a cross\n")
    with pytest.raises(ValueError, match=r"p\.txt:2: blank line"):
        load_prompts(path)


def test_mismatch_names_first_differing_line():
    metadata = [suites.single_object_record(name) for name in ("star", "cross", "circle")]
    check_prompts_match(["a photo of a star", "a photo of a cross", "a photo of a circle"], metadata)
    with pytest.raises(ValueError, match="line 2: prompt 'a photo of a square'"):
        check_prompts_match(["a photo of a star", "a photo of a square", "a photo of a diamond"], metadata)
    with pytest.raises(ValueError, match="line 3: 2 prompts but 3 metadata records"):
        check_prompts_match(["a photo of a star", "a photo of a cross"], metadata)
