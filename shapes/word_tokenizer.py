"""Word-level text tokenizer for shapes-world prompts.

The vocabulary is every word of every prompt the six GenEval templates make over the shapes
vocabulary, so any shapes-world prompt encodes; a word outside it is an error, not an
unknown token, because the embedded generator cannot draw what it has never read about.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

PAD = "[PAD]"


class WordTokenizer:
    def __init__(self, words: list[str], max_length: int):
        self.words = [PAD] + [w for w in words if w != PAD]
        self.index = {w: i for i, w in enumerate(self.words)}
        self.max_length = max_length
        self.pad_id = 0

    @classmethod
    def for_shapes_world(cls, max_length: int = 12) -> "WordTokenizer":
        from geneval.suites import enumerate_records, shapes_vocabulary
        words = sorted({w for r in enumerate_records(shapes_vocabulary()) for w in r["prompt"].split()})
        return cls(words, max_length)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """``long [B, max_length]`` word ids, right-padded with ``[PAD]``."""
        rows = []
        for prompt in prompts:
            words = prompt.split()
            unknown = [w for w in words if w not in self.index]
            if unknown:
                raise ValueError(f"prompt {prompt!r} uses words outside the shapes world {unknown}; "
                                 "the embedded generator only reads shapes-world prompts")
            if len(words) > self.max_length:
                raise ValueError(f"prompt {prompt!r} has {len(words)} words; at most {self.max_length}")
            rows.append([self.index[w] for w in words] + [self.pad_id] * (self.max_length - len(words)))
        return torch.tensor(rows, dtype=torch.long)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"words": self.words, "max_length": self.max_length}, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "WordTokenizer":
        data = json.loads(Path(path).read_text())
        return cls(data["words"], data["max_length"])
