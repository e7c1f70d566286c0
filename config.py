"""The run configuration: one dataclass tree, loaded from a YAML preset plus ``key=value`` overrides.

    cfg = load_config("configs/shapes.yaml", ["run.eval_num=2", "generation.guidance_scale=3"])

Layers, later ones win: the dataclass defaults below (the paper's settings), the YAML file, then
the overrides. The structured schema rejects unknown keys and values of the wrong type with a
``ValueError`` naming the key. This is the only module that knows OmegaConf's merge rules;
``main.py`` saves the resolved tree beside the outputs (``OUTDIR/config.yaml``).
"""
from __future__ import annotations

import math

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from generation.config import GenerationConfig
from geneval.config import GenEvalConfig, check_geneval_config
from reward_models.judge import JudgeConfig
from validation import Rule, above, above_up_to, at_least, check_numbers, flatten

# Upstream citations below are to ZiyuGuo99/Image-Generation-CoT main.py (argparse defaults).

REPOSITORY = Path(__file__).resolve().parent
"""The folder of this module: the repository in a checkout or an editable install (``pip install -e .``),
which holds the presets (``configs/``), the shipped weights (``weights/``) and the prompt suites
(``geneval/prompts/``)."""


def shipped_path(path: str) -> str:
    """``path`` unchanged when it is absolute or exists from the working directory; else, when the
    repository ships that relative path (a preset, shipped weights, a prompt suite), its full path.

    So the shipped presets run from any working directory, and a run started in the repository saves
    its paths exactly as the preset writes them. A path found in neither place is returned unchanged
    for its reader to report (an HF model id, for one, is not a path).
    """
    if not path or Path(path).is_absolute() or Path(path).exists():
        return path
    shipped = REPOSITORY / path
    return str(shipped) if shipped.exists() else path


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
    """Selection policy, a key of ``policies.POLICIES`` (upstream ``--reward_model``, main.py:115; its empty
    default, plain decoding, is ``none`` here)."""
    dpo_model: str = ""
    """A key of ``dpo_checkpoints`` or a weights folder; replaces ``generation.weights``. Empty: the
    preset's base weights (upstream ``--dpo_model``, main.py:121 and the if-chain at main.py:135-146)."""
    evaluate: bool = True
    """Score OUTDIR with GenEval (``geneval.evaluate``) once every image exists."""
    device: str = "auto"
    """Generator device: ``auto`` (cuda:LOCAL_RANK if available, else cpu), ``cpu``, ``cuda`` or ``cuda:N``."""
    prompt_range: str = ""
    """Only the prompts ``START-END`` (0-based line numbers of the prompt file, END excluded, either
    may be left out: ``-10`` is the first ten, ``500-`` from line 500 on); empty = every prompt. Images depend only on the prompt's line, so a
    subset run's images are those of the full run and a later run fills in the rest."""
    per_tag: int = 0
    """Only the first ``k`` prompts of every metadata tag (after ``prompt_range``); 0 = all. E.g.
    ``run.per_tag=1`` tries a policy on one prompt of each GenEval category in seconds."""


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
    path = Path(shipped_path(str(config_path)))
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
    validate_config(cfg)
    anchor_inputs(cfg)
    return cfg


PATH_SETTINGS = ("run.prompts_file", "run.metadata_file", "generation.weights", "reward.checkpoint")
PATH_TABLES = ("reward_checkpoints.", "dpo_checkpoints.")


def is_path_setting(key: str) -> bool:
    """Whether the flattened setting ``key`` names an input file or folder (the ones ``anchor_inputs`` anchors)."""
    return key in PATH_SETTINGS or key.startswith(PATH_TABLES)


def anchor_inputs(cfg: Config) -> None:
    """Relative input paths the repository ships resolve there from any working directory (``shipped_path``);
    outputs (``run.outdir``) stay relative to the working directory."""
    cfg.run.prompts_file = shipped_path(cfg.run.prompts_file)
    cfg.run.metadata_file = shipped_path(cfg.run.metadata_file)
    cfg.generation.weights = shipped_path(cfg.generation.weights)
    cfg.reward.checkpoint = shipped_path(cfg.reward.checkpoint)
    cfg.reward_checkpoints = {name: shipped_path(path) for name, path in cfg.reward_checkpoints.items()}
    cfg.dpo_checkpoints = {name: shipped_path(path) for name, path in cfg.dpo_checkpoints.items()}


NUMBER_RULES: dict[str, Rule] = {
    "run.batch_size": at_least(1), "run.eval_num": at_least(1), "run.search_num": at_least(1),
    "run.per_tag": at_least(0),
    "search.prm_every": at_least(1), "search.reflect_rounds": at_least(0),
    "search.lookahead_every": at_least(1), "search.blocks": at_least(1), "search.anchors": at_least(1),
    "search.confidence_keep": above_up_to(0, 1),
    "generation.num_steps": at_least(1), "generation.guidance_scale": at_least(0),
    "generation.temperature": at_least(0), "generation.rows_per_step": at_least(1), "generation.top_k": at_least(0),
    "generation.llamagen.image_size": above(0), "generation.llamagen.top_p": above_up_to(0, 1),
    "generation.llamagen.cfg_interval": at_least(-1), "generation.llamagen.num_heads": at_least(0),
    "reward.batch_size": at_least(1),
}
"""Valid ranges of the numeric settings outside ``geneval:`` (``geneval.config.GENEVAL_RULES``)."""


def validate_config(cfg: Config) -> None:
    """Every value the schema's types let through but the runner cannot use: ValueError naming the key.

    Called by ``load_config``, so ``main.py`` refuses a bad value before anything is written.
    """
    tree = yaml.safe_load(to_yaml(cfg))
    check_numbers(flatten({k: v for k, v in tree.items() if k != "geneval"}), NUMBER_RULES)
    check_geneval_config(cfg.geneval, "geneval.")
    if not cfg.run.outdir:
        raise ValueError("run.outdir is empty; pass --outdir DIR")
    parse_prompt_range(cfg.run.prompt_range)
    weights = cfg.search.confidence_weights
    if len(weights) != 3 or not all(math.isfinite(w) for w in weights):
        raise ValueError("search.confidence_weights takes 3 finite weights (entropy, margin, guidance gap), got "
                         f"{list(weights)}; e.g. search.confidence_weights=[1.0,1.0,1.0]")


def parse_prompt_range(text: str) -> slice:
    """``run.prompt_range`` (``"START-END"``, either part optional; empty = all) as a slice.

    A dash, not a colon: YAML reads ``9:`` as a mapping."""
    if not text.strip():
        return slice(None)
    start, sep, end = text.partition("-")
    try:
        bounds = [int(part) if part.strip() else None for part in (start, end)]
    except ValueError:
        bounds = None
    if not sep or bounds is None or any(b is not None and b < 0 for b in bounds):
        raise ValueError(f"run.prompt_range={text!r} is not START-END with non-negative line numbers "
                         "(0-based, END excluded); e.g. run.prompt_range=0-10 or run.prompt_range=-5 (the first 5)")
    return slice(*bounds)


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML (what ``OUTDIR/config.yaml`` holds)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
