"""DPO pair files and one training case per real backend (tiny Show-o, Janus-Pro, LlamaGen in their official
layouts; shared by test_dpo_backends.py, test_dpo_train.py and test_dpo_fsdp.py)."""
import json

import pytest
import torch

from dpo.train import TrainConfig
from generation.config import GenerationConfig
from generation.showo import ShowoGenerator
from janus_fixtures import make as make_janus
from llamagen_fixtures import HEADS
from llamagen_fixtures import make as make_llamagen


PROMPTS = ["a photo of red cat", "two dog and a cat", "the green dog", "a blue cat"]  # words of showo_fixtures' vocab
RASTER_DROPOUT = 0.25
"""Text dropout of the Janus/LlamaGen runs: the seed's draws drop 3 of the 6 rows of 3 steps of 2 pairs."""


def write_pairs(path, num_tokens: int, codebook_size: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    records = [{"prompt": p, "chosen": torch.randint(0, codebook_size, (num_tokens,), generator=gen).tolist(),
                "rejected": torch.randint(0, codebook_size, (num_tokens,), generator=gen).tolist(),
                "weight": 1.0 + i % 2} for i, p in enumerate(PROMPTS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def settings(pairs, out, **overrides) -> TrainConfig:
    return TrainConfig(**{"pairs": str(pairs), "out": str(out), "lr": 1e-3, "batch_size": 2, "steps": 3,
                          "log_every": 1, "checkpoint_every": 2, **overrides})


@pytest.fixture(scope="module")
def pair_file(tmp_path_factory):
    gen = torch.Generator().manual_seed(0)
    prompts = ["a photo of a circle", "a photo of a red square", "a photo of two crosses"]
    records = [{"prompt": prompts[i % 3], "chosen": torch.randint(0, 1291, (64,), generator=gen).tolist(),
                "rejected": torch.randint(0, 1291, (64,), generator=gen).tolist(), "weight": 0.5 + (i % 2)}
               for i in range(12)]
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# -- one case per backend -----------------------------------------------------------------------------
# (TrainConfig, loader of a weights path, which model parameters train, frozen modules
# outside the model)
def showo_case(checkpoint, tmp_path):
    root = checkpoint["root"]
    cfg = settings(write_pairs(tmp_path / "pairs.jsonl", 16, 16), tmp_path / "out", backend="showo",
                   init=str(root / "showo"), overrides=[f"generation.tokenizer={root / 'vq'}"], cond_dropout=0.5)

    def load(weights):
        return ShowoGenerator(GenerationConfig(backend="showo", weights=str(weights), tokenizer=str(root / "vq")))
    return cfg, load, lambda name: True, ["vq"]  # all of phi trains


def janus_case(janus_weights, tmp_path):
    cfg = settings(write_pairs(tmp_path / "pairs.jsonl", 16, 64), tmp_path / "out", backend="janus",
                   init=str(janus_weights), overrides=["generation.dtype=float32"], cond_dropout=RASTER_DROPOUT)
    trainable = ("model.language_model.", "model.generation_embeddings.", "model.generation_aligner.",
                 "model.generation_head.")  # not: vision_model, aligner, vqmodel, lm_head
    return cfg, make_janus, lambda name: name.startswith(trainable), []


def llamagen_case(folder, tmp_path):
    cfg = settings(write_pairs(tmp_path / "pairs.jsonl", 16, 64), tmp_path / "out", backend="llamagen",
                   init=str(folder / "t2i_tiny.pt"), cond_dropout=RASTER_DROPOUT,
                   overrides=[f"generation.tokenizer={folder / 'vq_tiny.pt'}", "generation.dtype=float32",
                              f"generation.llamagen.text_encoder={folder / 't5'}", "generation.llamagen.image_size=8",
                              f"generation.llamagen.num_heads={HEADS}"])

    def load(weights):
        return make_llamagen(folder, weights=str(weights))
    return cfg, load, lambda name: True, ["text_encoder", "vq"]  # the whole GPT trains
