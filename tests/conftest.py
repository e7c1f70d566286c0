"""Shared fixtures: a tiny random shapes-world generator in the shipped weights layout, and a helper
that writes a sub-suite of the shapes prompts for runner commands."""
import json
from pathlib import Path

import pytest
import torch


def write_shapes_suite(folder: Path, rows: slice) -> tuple[list[dict], Path, Path]:
    """``rows`` of the held-out shapes suite as ``(records, prompts file, metadata file)`` under ``folder``."""
    suite = Path(__file__).resolve().parents[1] / "geneval" / "prompts" / "shapes" / "evaluation_metadata.jsonl"
    records = [json.loads(line) for line in suite.read_text().splitlines()][rows]
    prompts_file, metadata_file = folder / "prompts.txt", folder / "metadata.jsonl"
    prompts_file.write_text("".join(r["prompt"] + "\n" for r in records))
    metadata_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records, prompts_file, metadata_file


def make_tiny_weights(folder: Path, hidden_size: int = 32, num_layers: int = 1, seed: int = 0) -> Path:
    """A random ``TinyT2I`` + the shipped tokenizer, saved as ``<folder>/{generator,tokenizer}``."""
    from generation.tiny.model import TinyConfig, TinyT2I
    from shapes.word_tokenizer import WordTokenizer
    from shapes.patch_tokenizer import PatchTokenizer

    tokenizer = PatchTokenizer.load("weights/shapes/tokenizer")
    text = WordTokenizer.for_shapes_world()
    torch.manual_seed(seed)
    model = TinyT2I(TinyConfig(text_vocab_size=len(text), codebook_size=tokenizer.cfg.codebook_size,
                               hidden_size=hidden_size, num_layers=num_layers, num_heads=2))
    model.save(folder / "generator")
    text.save(folder / "generator" / "text_vocab.json")
    tokenizer.save(folder / "tokenizer")
    return folder


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("tiny_weights"))
