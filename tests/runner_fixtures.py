"""The tiny random shapes-world generator, the 4-prompt suite and the command line of the runner tests
(shared by test_runner.py, test_hardening.py and test_scale_out.py). ``weights`` and ``suite`` need a
module-scoped ``root`` fixture, which each test module defines as its own folder."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from generation.tiny.model import TinyConfig, TinyT2I
from shapes.word_tokenizer import WordTokenizer
from shapes.patch_tokenizer import PatchTokenizer

REPO = Path(__file__).resolve().parents[1]
SHAPES = REPO / "geneval" / "prompts" / "shapes"
SHIPPED_TOKENIZER = REPO / "weights" / "shapes" / "tokenizer"
PROMPT_LINES = [1, 10, 20, 40]  # single_object, two_object, counting, colors (1-based lines of the suite)
EVAL_NUM = 2


@pytest.fixture(scope="module")
def weights(root) -> Path:
    """A random TinyT2I with the shipped shapes tokenizer, in the backend's folder layout."""
    folder = root / "weights"
    tokenizer = PatchTokenizer.load(SHIPPED_TOKENIZER)
    torch.manual_seed(0)
    model = TinyT2I(TinyConfig(text_vocab_size=35, codebook_size=tokenizer.cfg.codebook_size, hidden_size=32,
                               num_layers=1, num_heads=2))
    model.save(folder / "generator")
    WordTokenizer.for_shapes_world().save(folder / "generator" / "text_vocab.json")
    tokenizer.save(folder / "tokenizer")
    return folder


def write_suite(folder: Path, prompts: list[str], records: list[dict]) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    prompts_file, metadata_file = folder / "prompts.txt", folder / "metadata.jsonl"
    prompts_file.write_text("".join(p + "\n" for p in prompts))
    metadata_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    return prompts_file, metadata_file


@pytest.fixture(scope="module")
def suite(root) -> tuple[Path, Path]:
    records = [json.loads(line) for line in (SHAPES / "evaluation_metadata.jsonl").read_text().splitlines()]
    chosen = [records[line - 1] for line in PROMPT_LINES]
    return write_suite(root / "suite", [r["prompt"] for r in chosen], chosen)


def command(outdir: Path, weights: Path, suite: tuple[Path, Path], *extra: str) -> list[str]:
    return ["--config", str(REPO / "configs" / "shapes.yaml"), "--prompts_file", str(suite[0]),
            "--metadata_file", str(suite[1]), "--outdir", str(outdir), "--eval_num", str(EVAL_NUM),
            "--batch_size", "3", f"generation.weights={weights}", "run.evaluate=false", *extra]


def files(outdir: Path, pattern: str = "*") -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``outdir`` matching ``pattern`` (hidden ones too)."""
    return {str(p.relative_to(outdir)): p.read_bytes() for p in sorted(outdir.rglob(pattern)) if p.is_file()}


def generated(outdir: Path) -> dict[str, bytes]:
    """The per-prompt outputs: metadata, PNGs and traces."""
    return {k: v for k, v in files(outdir).items() if k.split("/")[0].isdigit()}


def subprocess_env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
