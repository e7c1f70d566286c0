"""Range checks of numeric settings, shared by the run config (``config.py``) and the evaluator's
(``geneval/config.py``): every setting is checked before anything is written.

    check_numbers({"generation.num_steps": 0}, {"generation.num_steps": at_least(1)})
    # ValueError: generation.num_steps must be at least 1, got 0

Every float must be finite (``nan``/``inf`` are refused whatever the rules say), and a key with a
rule must satisfy it. The schema's types were already checked by OmegaConf.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Rule:
    holds: Callable[[float], bool]
    requirement: str
    """What a valid value is, in words ("at least 1", "between 0 and 1")."""


def at_least(low: float) -> Rule:
    return Rule(lambda value: value >= low, f"at least {low}")


def above(low: float) -> Rule:
    return Rule(lambda value: value > low, f"greater than {low}")


def between(low: float, high: float) -> Rule:
    return Rule(lambda value: low <= value <= high, f"between {low} and {high}")


def above_up_to(low: float, high: float) -> Rule:
    return Rule(lambda value: low < value <= high, f"greater than {low} and at most {high}")


def check_numbers(flat: dict[str, Any], rules: dict[str, Rule]) -> None:
    """Raise ValueError naming the first setting of ``flat`` (``{"a.b": value}``) that is out of range."""
    for key, value in flat.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number, got {value}; "
                             f"{'it must be ' + rules[key].requirement if key in rules else 'pass a finite value'}")
    for key, rule in rules.items():
        value = flat.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not rule.holds(value):
            raise ValueError(f"{key} must be {rule.requirement}, got {value}")


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
