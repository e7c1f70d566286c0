"""Shared fixtures: a tiny random shapes-world generator in the shipped weights layout."""
from pathlib import Path

import pytest
import torch


def make_tiny_weights(folder: Path, hidden_size: int = 32, num_layers: int = 1, seed: int = 0) -> Path:
    """A random ``TinyT2I`` + the shipped tokenizer, saved as ``<folder>/{generator,tokenizer}``."""
    from generation.tiny.model import TinyConfig, TinyT2I
    from generation.tiny.text import WordTokenizer
    from generation.tiny.vq import PatchTokenizer

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
