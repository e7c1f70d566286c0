"""The policy registry: every ``--reward_model`` name, its class, and the factory that builds a run's
policy with its judge.

The paper's policies live in ``search.py``, the ones from after the paper in ``scaling_policies.py``
(which builds on ``search.py``); this module joins them so that neither imports the other's registry.
"""
from __future__ import annotations

import torch

import reward_models
from config import Config
from distributed import resolve_device
from geneval.suites import load_metadata
from reward_models import verifiers
from reward_models.judge import YesNoJudge
from reward_models.oracle import GenEvalOracle
from scaling_policies import SCALING_POLICIES
from search import FineTunedOrm, OracleBestOfN, Parm, ParmPlusPlus, PlainDecoding, Policy, StepSearch, ZeroShotOrm

PAPER_POLICIES: dict[str, type] = {"none": PlainDecoding, "orm_zs": ZeroShotOrm, "orm_ft": FineTunedOrm,
                                   "prm": StepSearch, "parm": Parm, "parm++": ParmPlusPlus, "oracle": OracleBestOfN}
"""The paper's verifiers (plain decoding, ORM, PRM, PARM, PARM++) and the oracle upper bound."""

POLICIES: dict[str, type] = {**PAPER_POLICIES, **SCALING_POLICIES}
"""``run.reward_model`` name -> policy class, constructed as ``cls(judge, search_settings, N)``. A class
says which judge it is handed by ``judge_source``: None (no judge), ``"checkpoint"`` (the
``reward:`` judge with the checkpoint ``reward_checkpoints[cls.name]``) or ``"oracle"`` (the GenEval
evaluator)."""


def check_policy_name(name: str) -> str:
    """``name`` when it is a key of ``POLICIES`` (``main.prepare`` checks it once, before anything loads)."""
    if name not in POLICIES:
        raise ValueError(f"unknown --reward_model {name!r}; valid: {sorted(POLICIES)}")
    return name


def policy_judge(cfg: Config, device: torch.device | str) -> YesNoJudge | None:
    """The judge the run's policy asks, built once on ``device`` (the generator's) or where the config says."""
    policy = POLICIES[cfg.run.reward_model]
    if policy.judge_source is None:
        return None
    if policy.judge_source == "oracle":
        device = torch.device(device)
        if cfg.geneval.device != "auto":  # "cuda" means this process's GPU, as for the generator
            device = resolve_device(cfg.geneval.device, device.index or 0)
        return GenEvalOracle(cfg.geneval, load_metadata(cfg.run.metadata_file), device)
    return reward_models.build_judge(verifiers.judge_config(cfg.reward, cfg.reward_checkpoints, policy.name), device)


def build_policy(cfg: Config, device: torch.device | str) -> Policy:
    """The policy ``run.reward_model`` with its judge, the ``search:`` settings and N = ``run.search_num``."""
    return POLICIES[cfg.run.reward_model](policy_judge(cfg, device), cfg.search, cfg.run.search_num)
