"""The shipped shapes-world runs stay byte for byte what they were when the Table 1 results were made.

Speed work on the generator and the judges (bench/search.py) must not change a single image or
selection: the shipped result files depend on them. A small run of every verifier policy in both
orders, on the shipped weights and judges, is hashed (kept images' bytes and the trace records) and
compared with the digests recorded from the code that produced the shipped results (commit 1328c41).
"""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

import search
from policies import build_policy
from config import load_config
from generation import build_generator

PRESETS = {"mask": "configs/shapes.yaml", "raster": "configs/shapes_raster.yaml"}
REQUESTS = [search.ImageRequest("a photo of a red circle", 0, 0), search.ImageRequest("a photo of two stars", 3, 1),
            search.ImageRequest("a photo of a blue square left of a yellow star", 7, 2)]
NUM_CANDIDATES = 4
POLICIES = ("none", "orm_ft", "prm", "parm", "parm++")

EXPECTED = {
    ('mask', 'none'): 'f4e58b4988843240d12a2f385ef4bb3064a5fe77ebc5648bb5177c5b570d086f',
    ('mask', 'orm_ft'): '01bf1a6b2b8941292e08bcda155861fb5a5e08889d892772dd91fe92bb9fc2ca',
    ('mask', 'prm'): '7ce6d252e380cde12369bb663eea8f5602391ac9dd013b096fb7fa1ccb1b6829',
    ('mask', 'parm'): '2ed4c1fb4a34a8a88d8098f4204b0a142f2d022ba4fa1137aefd39c219f3cff8',
    ('mask', 'parm++'): '45c08f3907f5856111473b071c8b816f96e17d49bee6a30f3d74ab61651d367a',
    ('raster', 'none'): '188ca6040a75e581d7b9a8fdd2b9d02e3e83fd16dbf2fa59e74e96d4f312fd57',
    ('raster', 'orm_ft'): 'f5cc76fd3f70a30974766d35a6c834eb8d84a5d6cb3ea03f904504e7bf839298',
    ('raster', 'prm'): '4d8afc5672423db6bfca8d17c0990ae2fe1b748bd9df2721c62429ba7e4ec749',
    ('raster', 'parm'): 'f5e858ff4d0b2586c663074d3c68b2c666390deedea532f93c810b7bd19b2852',
    ('raster', 'parm++'): '35a1ec962ec1508efb74bf4d0d50095c679706c036e79da97485d02df169b6e4',
}
"""``(order, policy) -> sha256`` recorded at commit 1328c41 (before the speed work)."""


def run_digest(order: str, policy: str, seed: int = 0) -> str:
    cfg = load_config(PRESETS[order], [f"run.search_num={NUM_CANDIDATES}", f"run.reward_model={policy}"])
    generator = build_generator(cfg.generation, torch.device("cpu"))
    selections = build_policy(cfg, torch.device("cpu"))(generator, REQUESTS, seed)
    digest = hashlib.sha256()
    for selection in selections:
        digest.update(selection.image.contiguous().numpy().tobytes())
        digest.update(json.dumps([r.as_json() for r in selection.candidates], sort_keys=True).encode())
    return digest.hexdigest()


@pytest.mark.parametrize("order", sorted(PRESETS))
@pytest.mark.parametrize("policy", POLICIES)
def test_shipped_runs_are_unchanged(order, policy):
    assert run_digest(order, policy) == EXPECTED[order, policy]


if __name__ == "__main__":  # prints the table to paste above (only from the reference commit)
    for order in sorted(PRESETS):
        for policy in POLICIES:
            print(f"    ({order!r}, {policy!r}): {run_digest(order, policy)!r},")


def test_a_shapes_judge_reads_generator_codes_as_it_reads_their_pictures():
    from generation.config import GenerationConfig
    from generation.tiny.backend import TinyGenerator
    from shapes.patch_tokenizer import PatchTokenizer
    from reward_models import JudgeConfig, Question, build_judge, verifiers

    judge = build_judge(JudgeConfig(backend="shapes", checkpoint="weights/shapes/judges/parm", dtype="float32",
                                    batch_size=3), "cpu")
    generator = TinyGenerator(GenerationConfig(backend="tiny", weights="weights/shapes", order="mask"))
    assert judge.reads_codes(generator.decode)
    codes = torch.randint(0, generator.tokenizer.cfg.codebook_size, (7, 64), generator=torch.Generator().manual_seed(0))
    questions = [Question(kind, "a photo of two stars") for kind in ("clarity", "potential", "orm", "prm", "orm",
                                                                       "clarity", "potential")]
    by_codes = judge.yes_no_probs_of_codes(codes, questions)
    by_pixels = judge.yes_no_probs(generator.decode(codes), questions)
    assert all(torch.equal(a, b) for a, b in zip(by_codes, by_pixels))
    coded = verifiers.CodedImages(codes, generator.decode)
    assert torch.equal(verifiers.ask(judge, "orm", coded[[2, 4]], ["a photo of two stars"] * 2)[0], by_pixels[0][[2, 4]])
    # another codebook (the judge's tokenizer would not read these pictures back as these codes)
    other = PatchTokenizer(generator.tokenizer.cfg, generator.tokenizer.codebook.flip(0) * 0.5)
    assert not judge.reads_codes(other.decode_uint8)
