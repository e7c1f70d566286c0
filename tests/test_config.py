"""Tests of the run configuration (config.py) and the presets (config.yaml, configs/shapes.yaml)."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from config import Config, RunConfig, flatten, load_config, to_yaml
from generation.config import GenerationConfig
from main import config_differences

REPO = Path(__file__).resolve().parents[1]


def test_paper_preset_is_the_show_o_setting():
    cfg = load_config(REPO / "config.yaml", [])
    assert (cfg.generation.backend, cfg.generation.weights, cfg.generation.tokenizer) == \
        ("showo", "showlab/show-o", "showlab/magvitv2")
    assert (cfg.generation.num_steps, cfg.generation.guidance_scale, cfg.generation.order) == (18, 1.75, "mask")
    assert (cfg.run.eval_num, cfg.run.search_num, cfg.run.reward_model) == (4, 20, "none")
    assert cfg.run.prompts_file == "geneval/prompts/generation_prompts.txt"
    assert cfg.run.metadata_file == "geneval/prompts/evaluation_metadata.jsonl"
    assert cfg.geneval.detector == "hf"
    assert cfg.dpo_checkpoints == {"dpo": "ckpts/dpo", "dpo_iter": "ckpts/dpo_iter",
                                   "dpo_iter_parm_gudie": "ckpts/dpo_iter_parm_gudie"}


def test_shapes_preset_points_at_the_shapes_world():
    cfg = load_config(REPO / "configs" / "shapes.yaml", [])
    assert (cfg.generation.backend, cfg.generation.weights, cfg.generation.order) == ("tiny", "weights/shapes", "mask")
    assert (cfg.geneval.detector, cfg.run.device, cfg.run.outdir) == ("shapes", "cpu", "outputs/shapes")
    assert (REPO / cfg.run.prompts_file).is_file() and (REPO / cfg.run.metadata_file).is_file()
    assert cfg.dpo_checkpoints == {name: f"weights/shapes/dpo/{name}" for name in ("dpo", "dpo_iter",
                                                                                  "dpo_iter_parm_gudie")}


def test_llamagen_preset_sets_its_own_options_and_overrides_reach_them():
    cfg = load_config(REPO / "configs" / "llamagen.yaml", ["generation.llamagen.image_size=512",
                                                           "generation.llamagen.text_encoder=/models/flan-t5-xl"])
    assert cfg.generation.backend == "llamagen" and cfg.generation.guidance_scale == 6.5
    options = cfg.generation.llamagen
    assert (options.image_size, options.text_encoder, options.top_p, options.cfg_interval) == \
        (512, "/models/flan-t5-xl", 1.0, -1)
    with pytest.raises(ValueError, match="generation.llamagen.top_q"):
        load_config(REPO / "configs" / "llamagen.yaml", ["generation.llamagen.top_q=0.9"])


def test_layers_yaml_then_flags_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("run:\n  eval_num: 3\n  seed: 5\ngeneration:\n  num_steps: 7\n")
    assert load_config(None, []) == Config()  # no file: the dataclass defaults
    cfg = load_config(path, ["run.seed=9", "generation.guidance_scale=2.5"],
                      {"run.eval_num": 2, "run.seed": 8, "generation.guidance_scale": 3.0})
    assert (cfg.run.eval_num, cfg.run.seed, cfg.generation.num_steps) == (2, 9, 7)
    assert cfg.generation.guidance_scale == 2.5  # key=value beats the flag
    assert cfg.run.batch_size == RunConfig().batch_size
    assert isinstance(cfg.generation, GenerationConfig)


@pytest.mark.parametrize("overrides, yaml_text, key", [
    (["run.eval_nums=2"], None, "run.eval_nums"),
    (["generation.stepz=3"], None, "generation.stepz"),
    (["nonsense=1"], None, "nonsense"),
    ([], "run:\n  outdir: x\n  bach_size: 2\n", "run.bach_size"),
    ([], "geneval:\n  detectr: shapes\n", "geneval.detectr"),
])
def test_unknown_key_is_named(tmp_path, overrides, yaml_text, key):
    path = None
    if yaml_text is not None:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml_text)
    with pytest.raises(ValueError, match=f"unknown config key '{key}'"):
        load_config(path, overrides)


@pytest.mark.parametrize("overrides, yaml_text, key", [
    (["run.eval_num=many"], None, "run.eval_num"),
    (["generation.guidance_scale=strong"], None, "generation.guidance_scale"),
    (["run.evaluate=maybe"], None, "run.evaluate"),
    ([], "run:\n  batch_size: big\n", "run.batch_size"),
])
def test_wrong_type_is_named(tmp_path, overrides, yaml_text, key):
    path = None
    if yaml_text is not None:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml_text)
    with pytest.raises(ValueError, match=f"bad value for config key '{key}'"):
        load_config(path, overrides)


def test_flag_with_unknown_key_or_bad_type_is_named():
    with pytest.raises(ValueError, match="run.eval_nums"):
        load_config(None, [], {"run.eval_nums": 2})
    with pytest.raises(ValueError, match="run.batch_size"):
        load_config(None, [], {"run.batch_size": "big"})


def test_other_bad_input(tmp_path):
    with pytest.raises(ValueError, match="is not key=value"):
        load_config(None, ["run.seed"])
    with pytest.raises(ValueError, match="run.eval_num must be at least 1, got 0"):
        load_config(None, ["run.eval_num=0"])
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.yaml", [])
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(bad, [])
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_config(bad, [])


def test_yaml_round_trip_and_flatten():
    cfg = load_config(REPO / "config.yaml", ["run.seed=3"])
    assert load_config(None, []) != cfg
    flat = flatten({"run": {"seed": 3, "eval_num": 4}, "dpo_checkpoints": {"dpo": "a"}, "x": 1})
    assert flat == {"run.seed": 3, "run.eval_num": 4, "dpo_checkpoints.dpo": "a", "x": 1}
    text = to_yaml(cfg)
    assert "seed: 3" in text and "dpo_iter_parm_gudie: ckpts/dpo_iter_parm_gudie" in text


def test_config_differences_ignore_only_image_neutral_keys():
    old = to_yaml(Config())
    neutral = Config()
    neutral.run.batch_size, neutral.run.evaluate, neutral.run.device, neutral.run.outdir = 99, False, "cpu", "x"
    neutral.geneval.threshold = 0.5
    assert config_differences(old, to_yaml(neutral)) == []
    changed = Config()
    changed.run.seed, changed.generation.guidance_scale = 4, 3.0
    changed.dpo_checkpoints = {"dpo": "ckpts/dpo"}  # a name table: the weights a run used are generation.weights
    assert config_differences(old, to_yaml(changed)) == ["generation.guidance_scale: 1.75 -> 3.0", "run.seed: 0 -> 4"]
    changed.generation.weights = "ckpts/dpo"
    assert "generation.weights: 'showlab/show-o' -> 'ckpts/dpo'" in config_differences(old, to_yaml(changed))


def test_settings_added_later_count_only_when_set_away_from_their_default():
    import yaml

    tree = yaml.safe_load(to_yaml(Config()))
    del tree["generation"]["llamagen"]  # a run written before generation.llamagen existed
    old = yaml.safe_dump(tree)
    assert config_differences(old, to_yaml(Config())) == []
    changed = Config()
    changed.generation.llamagen.top_p = 0.9
    assert config_differences(old, to_yaml(changed)) == ["generation.llamagen.top_p: '<absent>' -> 0.9"]


def _fields_without_docstring(path: Path, class_names: set[str]) -> list[str]:
    missing = []
    for node in ast.parse(path.read_text()).body:
        if not (isinstance(node, ast.ClassDef) and node.name in class_names):
            continue
        body = node.body
        for i, statement in enumerate(body):
            if isinstance(statement, ast.AnnAssign):
                following = body[i + 1] if i + 1 < len(body) else None
                documented = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant) \
                    and isinstance(following.value.value, str)
                if not documented:
                    missing.append(f"{node.name}.{statement.target.id}")
    return missing


def test_every_field_is_documented():
    assert {f.name for f in dataclasses.fields(Config)} == {"run", "generation", "geneval", "dpo_checkpoints",
                                                            "search", "reward", "reward_checkpoints"}
    assert _fields_without_docstring(REPO / "config.py", {"RunConfig", "SearchConfig", "Config"}) == []


def test_shipped_presets_load_from_any_working_directory(tmp_path, monkeypatch):
    from config import REPOSITORY

    monkeypatch.chdir(tmp_path)
    cfg = load_config("configs/shapes.yaml", ["run.reward_model=parm"])
    assert Path(cfg.generation.weights) == REPOSITORY / "weights" / "shapes"
    assert Path(cfg.run.metadata_file).is_file() and Path(cfg.reward_checkpoints["parm"]).is_dir()
    assert cfg.run.outdir == "outputs/shapes"  # outputs stay relative to the working directory
    assert load_config(None, ["reward.checkpoint=llava-hf/some-model"]).reward.checkpoint == "llava-hf/some-model"


def test_paths_that_exist_from_the_working_directory_are_kept_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    assert load_config("configs/shapes.yaml").generation.weights == "weights/shapes"
