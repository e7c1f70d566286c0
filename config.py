"""The run configuration: one dataclass tree, loaded from a YAML preset plus ``key=value`` overrides.

    cfg = load_config("configs/shapes.yaml", ["run.eval_num=2", "generation.guidance_scale=3"])

Layers, later ones win: the dataclass defaults below (the paper's settings), the YAML file, then
the overrides. The structured schema rejects unknown keys and values of the wrong type with a
``ValueError`` naming the key. This is the only module that knows OmegaConf's merge rules;
``main.py`` saves the resolved tree beside the outputs (``OUTDIR/config.yaml``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from generation.config import GenerationConfig
from geneval.config import GenEvalConfig
from reward_models.judge import JudgeConfig

# Upstream citations below are to ZiyuGuo99/Image-Generation-CoT main.py (argparse defaults).


@dataclass
class RunConfig:
    prompts_file: str = "geneval/prompts/generation_prompts.txt"
    """GenEval prompts, one per line (upstream ``--prompts_file``, main.py:49). Default: the official 553."""
    metadata_file: str = "geneval/prompts/evaluation_metadata.jsonl"
    """GenEval metadata, one JSON record per line, line N describing prompt N (upstream ``--metadata_file``,
    main.py:55). Upstream requires both files and checks they agree (baseline.py:334-338); so do we."""
    outdir: str = "outputs/geneval"
    """Output folder in GenEval's layout. Upstream ``--outdir`` (main.py:67) is silently replaced by
    ``results/<model>_<reward>_<dpo>`` (main.py:132); here it is used as given."""
    batch_size: int = 4
    """Generator rows (candidates) per forward batch. Upstream's ``--batch_size`` (main.py:73, default 1)
    is ignored there; here it bounds memory and does not change images."""
    eval_num: int = 4
    """Images per prompt (upstream ``--eval_num`` 4, main.py:103; GenEval's protocol)."""
    search_num: int = 20
    """Candidates per image, N in best-of-N (upstream ``--search_num`` 20, main.py:109; paper best-of-20)."""
    seed: int = 0
    """Base seed: candidate (prompt p, image s, candidate c) draws from ``seeded_generator(seed, p, s, c)``.
    Upstream instead seeds every rank with ``pl.seed_everything(1234)`` (main.py:22), so its images
    depend on the world size; ours do not."""
    reward_model: str = "none"
    """Selection policy, a key of ``search.POLICIES`` (upstream ``--reward_model``, main.py:115; its empty
    default, plain decoding, is ``none`` here)."""
    dpo_model: str = ""
    """A key of ``dpo_checkpoints`` or a weights folder; replaces ``generation.weights``. Empty: the
    preset's base weights (upstream ``--dpo_model``, main.py:121 and the if-chain at main.py:135-146)."""
    evaluate: bool = True
    """Score OUTDIR with GenEval (``geneval.evaluate``) once every image exists."""
    device: str = "auto"
    """Generator device: ``auto`` (cuda:LOCAL_RANK if available, else cpu), ``cpu``, ``cuda`` or ``cuda:N``."""


@dataclass
class SearchConfig:
    """How the verifier policies of ``search.py`` search (the ``search:`` section)."""

    prm_every: int = 1
    """PRM: judge the previews after every k-th decoding step. 1 = every step, as the paper's PRM on
    Show-o's 18 steps (paper section 3.2)."""
    sampled_decisions: bool = False
    """PARM clarity/potential decisions. False: the answer with the larger probability (the paper's
    yes/no). True: upstream's sampled first token at temperature 1 (selector.py ``generate(do_sample=True)``),
    drawn from a generator seeded per (seed, prompt, sample, candidate, step)."""
    prune: bool = True
    """PARM: drop a path from the batch as soon as its potential assessment says no (the paper's
    truncation, a real compute saving). False: upstream parm.py, every path runs all steps and the
    potential answer is only used at selection; the kept image is the same either way."""
    reflect_rounds: int = 3
    """PARM++: at most this many reflect-and-correct rounds after the PARM choice (paper section 5: 3)."""
    lookahead_every: int = 1
    """``lookahead``: judge the lookahead images (scaling_policies.py) after every k-th decoding step. In
    raster order each judged step costs a greedy completion of the remaining codes of every row."""
    blocks: int = 4
    """``progressive``, ``confidence``, ``confidence_orm``: decoding is cut into this many blocks of
    (nearly) equal steps; the policy decides at the end of every block but the last. At most the
    backend's ``num_steps``."""
    anchors: int = 2
    """``progressive``: rows of each image kept as anchors at a block end (GridAR's k); every other row
    restarts from an anchor's state."""
    confidence_keep: float = 0.5
    """``confidence``, ``confidence_orm``: fraction of an image's running paths kept at each block end
    (rounded up, at least 1); the others stop (ScalingAR's early termination of weak paths)."""
    confidence_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    """Weights of a path's mean normalised token entropy (counted negatively), top-2 margin and
    guidance gap in its confidence (``generation.base.decision_stats``; ScalingAR's signals)."""


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    """What to generate, where, and how to select among candidates."""
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    """The image generator (``generation/config.py``)."""
    geneval: GenEvalConfig = field(default_factory=GenEvalConfig)
    """The GenEval scorer (``geneval/config.py``)."""
    dpo_checkpoints: dict[str, str] = field(default_factory=dict)
    """``--dpo_model`` name -> generator weights folder, per preset. Upstream hard-codes
    ``ckpts/dpo``, ``ckpts/dpo_iter`` and ``ckpts/dpo_iter_parm_gudie`` (main.py:135-146)."""
    search: SearchConfig = field(default_factory=SearchConfig)
    """How the verifier policies search (``search.py``)."""
    reward: JudgeConfig = field(default_factory=JudgeConfig)
    """The judge backend and its settings (``reward_models/judge.py``). A search policy replaces
    ``reward.checkpoint`` with its own entry of ``reward_checkpoints``."""
    reward_checkpoints: dict[str, str] = field(default_factory=dict)
    """``--reward_model`` policy name -> judge checkpoint (local folder or cached HF id), per preset:
    ``orm_zs``, ``orm_ft``, ``prm``, ``parm``, ``parm++``. Upstream hard-codes one per script
    (orm.py/parm.py ``ImageSelector(pretrained=...)``)."""


def _merge(merged, layer, source: str):
    # Section by section, so an error without a key of its own (e.g. "run=5") still names one.
    for section in layer:
        try:
            merged = OmegaConf.merge(merged, {section: layer[section]})
        except OmegaConfBaseException as err:
            raise ValueError(_describe(err, source, section)) from err
    return merged


def _describe(err: OmegaConfBaseException, source: str, section: str | None = None) -> str:
    key = getattr(err, "full_key", None) or section
    reason = str(err).splitlines()[0]
    if "not in" in reason and key:
        return (f"{source}: unknown config key {key!r} ({reason}); see the dataclasses in config.py, "
                "generation/config.py and geneval/config.py for the valid keys")
    where = f"config key {key!r}" if key else "config"
    return f"{source}: bad value for {where}: {reason}"


def _read_yaml(config_path: str | Path):
    path = Path(config_path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist; pass --config config.yaml (Show-o) or "
                         "--config configs/shapes.yaml (embedded shapes world)")
    try:
        layer = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        raise ValueError(f"config file {path} is not valid YAML: {err}") from err
    if not OmegaConf.is_dict(layer):
        raise ValueError(f"config file {path} must hold a mapping of sections (run:, generation:, ...)")
    return layer


def _dotlist(overrides: list[str]):
    for override in overrides:
        key, sep, _ = override.partition("=")
        if not sep or not key:
            raise ValueError(f"override {override!r} is not key=value; e.g. run.eval_num=2 "
                             "generation.guidance_scale=3.0")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except (yaml.YAMLError, OmegaConfBaseException) as err:  # a value that is not YAML, e.g. "run.outdir=[x"
        raise ValueError(f"cannot parse overrides {overrides}: {err}") from err


def load_config(config_path: str | Path | None, overrides: list[str] = (),
                updates: dict[str, Any] | None = None) -> Config:
    """Defaults <- YAML file <- ``updates`` (``{"run.eval_num": 2}``, from CLI flags) <- ``key=value`` overrides."""
    merged = OmegaConf.structured(Config)
    if config_path is not None:
        merged = _merge(merged, _read_yaml(config_path), str(config_path))
    for key, value in (updates or {}).items():
        try:
            OmegaConf.update(merged, key, value, merge=True)
        except OmegaConfBaseException as err:
            raise ValueError(_describe(err, "command line")) from err
    if overrides:
        merged = _merge(merged, _dotlist(list(overrides)), "command line")
    try:
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ValueError(_describe(err, "config")) from err
    check_run_config(cfg.run)
    check_search_config(cfg.search)
    return cfg


def check_run_config(run: RunConfig) -> None:
    """Reject values the schema's types let through but the runner cannot use."""
    for name in ("batch_size", "eval_num", "search_num"):
        if getattr(run, name) < 1:
            raise ValueError(f"run.{name} must be at least 1, got {getattr(run, name)}")
    if not run.outdir:
        raise ValueError("run.outdir is empty; pass --outdir DIR")


def check_search_config(search: SearchConfig) -> None:
    if search.prm_every < 1:
        raise ValueError(f"search.prm_every must be at least 1, got {search.prm_every}")
    if search.reflect_rounds < 0:
        raise ValueError(f"search.reflect_rounds must be at least 0, got {search.reflect_rounds}")
    for name in ("lookahead_every", "blocks", "anchors"):
        if getattr(search, name) < 1:
            raise ValueError(f"search.{name} must be at least 1, got {getattr(search, name)}")
    if not 0 < search.confidence_keep <= 1:
        raise ValueError(f"search.confidence_keep must be in (0, 1] (a fraction of the running paths), "
                         f"got {search.confidence_keep}")
    if len(search.confidence_weights) != 3:
        raise ValueError("search.confidence_weights takes 3 weights (entropy, margin, guidance gap), got "
                         f"{list(search.confidence_weights)}; e.g. search.confidence_weights=[1.0,1.0,1.0]")


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML (what ``OUTDIR/config.yaml`` holds)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"run": {"seed": 0}}`` -> ``{"run.seed": 0}``."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
