"""GenEval prompt suites: generate them, write them, load and check them.

The generator follows GenEval's ``prompts/create_prompts.py`` (djghosh13/geneval) call for
call on numpy's ``default_rng``, so with the 80 COCO classes, seed 43 and 100 prompts per tag
it rebuilds the official ``generation_prompts.txt`` / ``evaluation_metadata.jsonl`` byte for
byte (553 prompts). The same generator over the shapes-world vocabulary writes the shapes
evaluation suite, plus a disjoint training pool and a small "held-in" suite drawn from it.

Run it (files go next to this module unless ``--output-dir`` says otherwise):

    python -m geneval.suites                  # geneval/prompts/{generation_prompts.txt,evaluation_metadata.jsonl}
    python -m geneval.suites --vocab shapes   # geneval/prompts/shapes/ (eval, held-in and train files)

A metadata record is one JSON object per line: ``tag``, ``include`` (a list of
``{class, count[, color][, position: [relation, clause_index]]}``), for counting prompts
``exclude``, and ``prompt``. Line N of the prompt file is the ``prompt`` of line N of the
metadata file.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geneval.detection import COLORS
from shapes.world import PLURALS as SHAPE_PLURALS
from shapes.world import SHAPES

# The 80 COCO classes in mmdet order, spelled as GenEval's object_names.txt spells them.
COCO_CLASSES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
]

RELATIONS = ["left of", "right of", "above", "below"]
TAGS = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
REQUIRED_FIELDS = ("tag", "include", "prompt")
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
MIN_COUNT, MAX_COUNT = 2, 4  # create_prompts.py: rng.integers(2, max_count=4, endpoint=True)

PROMPTS_FILE = "generation_prompts.txt"
METADATA_FILE = "evaluation_metadata.jsonl"
HELDIN_PROMPTS_FILE = "heldin_prompts.txt"
HELDIN_METADATA_FILE = "heldin_metadata.jsonl"
TRAIN_METADATA_FILE = "train_metadata.jsonl"
# Six shapes make small tags: 100 draws per tag would put every two_object and counting prompt in
# the evaluation suite and leave none to train on. 16 draws keep a held-out suite in every tag
# (single_object is always all six classes, so its prompts are never trained on).
SHAPES_PROMPTS_PER_TAG = 16
PROMPTS_DIR = Path(__file__).parent / "prompts"
"""The data folder shipped beside this module: the official suite, and the shapes suites under ``shapes/``."""
SHAPES_SUITE_DIR = PROMPTS_DIR / "shapes"
DEFAULT_OUTPUT_DIRS = {"coco": PROMPTS_DIR, "shapes": SHAPES_SUITE_DIR}


def with_article(word: str) -> str:
    """'a'/'an' by the first letter only, as create_prompts.py does ("a yellow", "an orange")."""
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def coco_plural(name: str) -> str:
    """create_prompts.py's plural rule: add 'es' after a final 's', else 's' ("skises", "sheeps")."""
    return f"{name}es" if name.endswith("s") else f"{name}s"


@dataclass
class Vocabulary:
    classes: list[str]
    """Object class names, in the order the RNG indexes them."""
    plurals: dict[str, str]
    """Plural of every class, for counting prompts."""
    colors: list[str] = field(default_factory=lambda: list(COLORS))
    relations: list[str] = field(default_factory=lambda: list(RELATIONS))
    uncolored: str | None = None
    """A class never given a colour; GenEval excludes "person" from colour prompts."""

    def __post_init__(self) -> None:
        missing = [name for name in self.classes if name not in self.plurals]
        if missing:
            raise ValueError(f"no plural given for classes {missing}; add them to `plurals`")
        if self.uncolored is not None and self.uncolored not in self.classes:
            raise ValueError(f"uncolored class {self.uncolored!r} is not in the vocabulary; "
                             f"use one of {self.classes} or None")


def coco_vocabulary() -> Vocabulary:
    return Vocabulary(list(COCO_CLASSES), {name: coco_plural(name) for name in COCO_CLASSES},
                      uncolored="person")


def shapes_vocabulary() -> Vocabulary:
    return Vocabulary(list(SHAPES), dict(SHAPE_PLURALS))


VOCABULARIES = {"coco": coco_vocabulary, "shapes": shapes_vocabulary}


# ---------------------------------------------------------------------------------------------
# Records: one builder per template, shared by the random suite and the exhaustive pool.

def single_object_record(name: str) -> dict:
    return dict(tag="single_object", include=[{"class": name, "count": 1}],
                prompt=f"a photo of {with_article(name)}")


def two_object_record(name_a: str, name_b: str) -> dict:
    return dict(tag="two_object",
                include=[{"class": name_a, "count": 1}, {"class": name_b, "count": 1}],
                prompt=f"a photo of {with_article(name_a)} and {with_article(name_b)}")


def counting_record(name: str, plural: str, count: int) -> dict:
    # The exclude clause fails an image showing one object too many.
    return dict(tag="counting", include=[{"class": name, "count": count}],
                exclude=[{"class": name, "count": count + 1}],
                prompt=f"a photo of {NUMBER_WORDS[count]} {plural}")


def color_record(name: str, color: str) -> dict:
    return dict(tag="colors", include=[{"class": name, "count": 1, "color": color}],
                prompt=f"a photo of {with_article(color)} {name}")


def position_record(name_a: str, relation: str, name_b: str) -> dict:
    # "A rel B": B is clause 0 and A's position is judged relative to clause 0.
    return dict(tag="position",
                include=[{"class": name_b, "count": 1},
                         {"class": name_a, "count": 1, "position": [relation, 0]}],
                prompt=f"a photo of {with_article(name_a)} {relation} {with_article(name_b)}")


def color_attr_record(name_a: str, color_a: str, name_b: str, color_b: str) -> dict:
    return dict(tag="color_attr",
                include=[{"class": name_a, "count": 1, "color": color_a},
                         {"class": name_b, "count": 1, "color": color_b}],
                prompt=f"a photo of {with_article(color_a)} {name_a} and {with_article(color_b)} {name_b}")


# ---------------------------------------------------------------------------------------------
# The random evaluation suite. Every rng call below mirrors one in create_prompts.py, in the
# same order and with the same arguments; changing any of them changes the official suite.

def _colorable_index(rng: np.random.Generator, vocab: Vocabulary) -> int:
    """A class index other than ``vocab.uncolored``, drawn as create_prompts.py does."""
    if vocab.uncolored is None:
        return int(rng.choice(len(vocab.classes)))
    # create_prompts.py generate_color_sample: draw from n-1 slots and rotate past "person".
    offset = int(rng.choice(len(vocab.classes) - 1)) + 1
    return (offset + vocab.classes.index(vocab.uncolored)) % len(vocab.classes)


def _colorable_pair(rng: np.random.Generator, vocab: Vocabulary) -> tuple[int, int]:
    num_classes = len(vocab.classes)
    if vocab.uncolored is None:
        idx_a, idx_b = rng.choice(num_classes, size=2, replace=False)
        return int(idx_a), int(idx_b)
    # create_prompts.py generate_color_attribution_sample: the same rotation, for two classes.
    offsets = rng.choice(num_classes - 1, size=2, replace=False) + 1
    idx_a, idx_b = (offsets + vocab.classes.index(vocab.uncolored)) % num_classes
    return int(idx_a), int(idx_b)


def sample_single_objects(rng: np.random.Generator, vocab: Vocabulary) -> list[dict]:
    # Upstream asks for len(classnames) samples: every class once, in a random order.
    order = rng.choice(len(vocab.classes), size=len(vocab.classes), replace=False)
    return [single_object_record(vocab.classes[i]) for i in order]


def sample_two_object(rng: np.random.Generator, vocab: Vocabulary) -> dict:
    idx_a, idx_b = rng.choice(len(vocab.classes), size=2, replace=False)
    return two_object_record(vocab.classes[idx_a], vocab.classes[idx_b])


def sample_counting(rng: np.random.Generator, vocab: Vocabulary) -> dict:
    name = vocab.classes[rng.choice(len(vocab.classes))]
    count = int(rng.integers(MIN_COUNT, MAX_COUNT, endpoint=True))
    return counting_record(name, vocab.plurals[name], count)


def sample_color(rng: np.random.Generator, vocab: Vocabulary) -> dict:
    name = vocab.classes[_colorable_index(rng, vocab)]
    color = vocab.colors[rng.choice(len(vocab.colors))]
    return color_record(name, color)


def sample_position(rng: np.random.Generator, vocab: Vocabulary) -> dict:
    idx_a, idx_b = rng.choice(len(vocab.classes), size=2, replace=False)
    relation = vocab.relations[rng.choice(len(vocab.relations))]
    return position_record(vocab.classes[idx_a], relation, vocab.classes[idx_b])


def sample_color_attr(rng: np.random.Generator, vocab: Vocabulary) -> dict:
    idx_a, idx_b = _colorable_pair(rng, vocab)
    color_a, color_b = rng.choice(len(vocab.colors), size=2, replace=False)
    return color_attr_record(vocab.classes[idx_a], vocab.colors[color_a],
                             vocab.classes[idx_b], vocab.colors[color_b])


def deduplicate(records: list[dict]) -> list[dict]:
    """Drop repeated records, keeping first occurrences.

    Upstream compares ``yaml.safe_dump(sample)`` texts, which sort keys; a key-sorted JSON dump
    is an equally exact canonical form for these str/int/list records, without needing yaml.
    """
    seen: set[str] = set()
    unique = []
    for record in records:
        key = json.dumps(record, sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(record)
    return unique


def generate_suite(vocab: Vocabulary, seed: int = 43, num_per_tag: int = 100) -> list[dict]:
    """GenEval's evaluation suite over ``vocab`` (create_prompts.py generate_suite)."""
    rng = np.random.default_rng(seed)
    records = sample_single_objects(rng, vocab)
    for sample in (sample_two_object, sample_counting, sample_color, sample_position, sample_color_attr):
        records.extend(sample(rng, vocab) for _ in range(num_per_tag))
    return deduplicate(records)


# ---------------------------------------------------------------------------------------------
# The exhaustive pool (every prompt the templates allow) and the held-in sample from it.

def enumerate_records(vocab: Vocabulary) -> list[dict]:
    """Every record of the six templates over ``vocab``, tag by tag, in vocabulary order."""
    classes, colors = vocab.classes, vocab.colors
    colorable = [name for name in classes if name != vocab.uncolored]
    records = [single_object_record(name) for name in classes]
    records += [two_object_record(a, b) for a in classes for b in classes if a != b]
    records += [counting_record(name, vocab.plurals[name], count)
                for name in classes for count in range(MIN_COUNT, MAX_COUNT + 1)]
    records += [color_record(name, color) for name in colorable for color in colors]
    records += [position_record(a, relation, b)
                for a in classes for relation in vocab.relations for b in classes if a != b]
    # Upstream draws the two colours without replacement, so they always differ.
    records += [color_attr_record(a, color_a, b, color_b)
                for a in colorable for b in colorable if a != b
                for color_a in colors for color_b in colors if color_a != color_b]
    return records


def training_pool(vocab: Vocabulary, eval_records: list[dict]) -> list[dict]:
    """Every template record whose prompt is not in ``eval_records``, in enumeration order."""
    held_out = {record["prompt"] for record in eval_records}
    return [record for record in enumerate_records(vocab) if record["prompt"] not in held_out]


def sample_heldin(pool: list[dict], seed: int = 43, max_per_tag: int = 16) -> list[dict]:
    """At most ``max_per_tag`` records of each tag from ``pool``, kept in pool order."""
    rng = np.random.default_rng(seed)
    heldin = []
    for tag in TAGS:
        tagged = [record for record in pool if record["tag"] == tag]
        if not tagged:
            continue
        picks = rng.choice(len(tagged), size=min(max_per_tag, len(tagged)), replace=False)
        heldin.extend(tagged[i] for i in sorted(picks))
    return heldin


def tag_counts(records: list[dict]) -> dict[str, int]:
    return {tag: sum(record["tag"] == tag for record in records) for tag in TAGS}


# ---------------------------------------------------------------------------------------------
# Files.

def _write_atomic(path: Path, lines: list[str]) -> None:
    """Write ``lines`` (one per line) so that readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="ascii", newline="\n") as fp:
        fp.writelines(line + "\n" for line in lines)
    os.replace(tmp, path)


def write_metadata(path: Path, records: list[dict]) -> None:
    # json.dumps defaults (", " and ": " separators, insertion order) match upstream's files.
    _write_atomic(path, [json.dumps(record) for record in records])


def write_prompts(path: Path, records: list[dict]) -> None:
    _write_atomic(path, [record["prompt"] for record in records])


def write_suite(output_dir: Path, records: list[dict], prompts_file: str = PROMPTS_FILE,
                metadata_file: str = METADATA_FILE) -> None:
    write_prompts(output_dir / prompts_file, records)
    write_metadata(output_dir / metadata_file, records)


def _read_lines(path: str | os.PathLike, kind: str) -> list[str]:
    path = Path(path)
    if path.is_dir():
        example = path / (PROMPTS_FILE if kind == "prompt" else METADATA_FILE)
        raise ValueError(f"{kind} file {path} is a folder; pass the file inside it (e.g. {example})")
    if not path.is_file():
        raise ValueError(f"{kind} file {path} does not exist; write it with `python -m geneval.suites` "
                         f"or pass the right path")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{kind} file {path} is not UTF-8 text (byte {err.start}: {err.reason}); pass the "
                         "text file with one entry per line") from err
    except OSError as err:
        raise ValueError(f"cannot read {kind} file {path} ({err.strerror})") from err
    if any("\x00" in line for line in lines):
        raise ValueError(f"{kind} file {path} holds NUL bytes, so it is not a text file; pass the text file "
                         "with one entry per line")
    if not lines:
        raise ValueError(f"{kind} file {path} is empty; regenerate it with `python -m geneval.suites`")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise ValueError(f"{path}:{number}: blank line; every line must hold one {kind} entry")
    return lines


def load_prompts(path: str | os.PathLike) -> list[str]:
    """The prompts of a ``generation_prompts.txt`` file, one per line."""
    return _read_lines(path, "prompt")


def _parse_record(path: Path, number: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{number}: malformed JSON ({err.msg}); each line must be one JSON object") from err
    if not isinstance(record, dict):
        raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
    missing = [name for name in REQUIRED_FIELDS if name not in record]
    if missing:
        raise ValueError(f"{path}:{number}: missing required field(s) {missing}; "
                         f"a record needs {list(REQUIRED_FIELDS)}")
    if not isinstance(record["include"], list) or not record["include"]:
        raise ValueError(f"{path}:{number}: `include` must be a non-empty list of clauses")
    return record


def load_metadata(path: str | os.PathLike) -> list[dict]:
    """The records of an ``evaluation_metadata.jsonl`` file, one JSON object per line."""
    return [_parse_record(Path(path), number, line)
            for number, line in enumerate(_read_lines(path, "metadata"), start=1)]


def check_prompts_match(prompts: list[str], metadata: list[dict]) -> None:
    """Raise ValueError at the first line where the prompt file and the metadata disagree."""
    for number, (prompt, record) in enumerate(zip(prompts, metadata), start=1):
        if prompt != record["prompt"]:
            raise ValueError(f"line {number}: prompt {prompt!r} differs from the metadata prompt "
                             f"{record['prompt']!r}; the two files must come from the same suite")
    if len(prompts) != len(metadata):
        raise ValueError(f"line {min(len(prompts), len(metadata)) + 1}: {len(prompts)} prompts but "
                         f"{len(metadata)} metadata records; the two files must come from the same suite")


# ---------------------------------------------------------------------------------------------
# CLI.

def write_coco(output_dir: Path, seed: int, num_per_tag: int) -> None:
    write_suite(output_dir, generate_suite(coco_vocabulary(), seed, num_per_tag))


def write_shapes(output_dir: Path, seed: int, num_per_tag: int, heldin_per_tag: int) -> None:
    vocab = shapes_vocabulary()
    suite = generate_suite(vocab, seed, num_per_tag)
    pool = training_pool(vocab, suite)
    write_suite(output_dir, suite)
    write_suite(output_dir, sample_heldin(pool, seed, heldin_per_tag), HELDIN_PROMPTS_FILE, HELDIN_METADATA_FILE)
    write_metadata(output_dir / TRAIN_METADATA_FILE, pool)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m geneval.suites", description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", choices=sorted(VOCABULARIES), default="coco",
                        help="object vocabulary: the 80 COCO classes or the shapes world (default: coco)")
    parser.add_argument("--seed", type=int, default=43, help="generation seed (default: 43, as GenEval)")
    parser.add_argument("--num-prompts", "-n", type=int, default=None,
                        help="prompts drawn per tag before de-duplication (default: 100 for coco as GenEval; "
                             f"{SHAPES_PROMPTS_PER_TAG} for shapes, so that every tag but single_object keeps "
                             "training prompts)")
    parser.add_argument("--heldin-per-tag", type=int, default=16,
                        help="shapes only: at most this many held-in prompts per tag (default: 16)")
    parser.add_argument("--output-dir", "-o", type=Path, default=None,
                        help="output folder (default: geneval/prompts, or geneval/prompts/shapes)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    output_dir = args.output_dir or DEFAULT_OUTPUT_DIRS[args.vocab]
    if args.vocab == "coco":
        write_coco(output_dir, args.seed, args.num_prompts or 100)
    else:
        write_shapes(output_dir, args.seed, args.num_prompts or SHAPES_PROMPTS_PER_TAG, args.heldin_per_tag)
    print(f"wrote the {args.vocab} prompt suite to {output_dir}")


if __name__ == "__main__":
    main()
