"""GenEval's decision rules as pure functions (djghosh13/geneval evaluation/evaluate_images.py).

No detector or model is imported here: the inputs are detections, the outputs are decisions.
The pipeline for one image is

    detected = filter_detections(metadata, raw_detections, cfg)   # threshold, 16-cap, NMS
    correct, reason = evaluate_image(metadata, detected, cfg, colors_of)
    record = result_record(filename, metadata, correct, reason, detected)

and one ``record`` per image is one line of ``results.jsonl`` (read by ``geneval.summary``).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from geneval.config import GenEvalConfig
from geneval.detection import COLORS, Detection

# Order in which relation names are joined in reason strings. Upstream joins a Python set,
# whose order depends on string hashing; a fixed order keeps our reasons reproducible.
RELATIONS = ["left of", "right of", "above", "below"]


@dataclass
class RuleConfig:
    """The numeric ``--options`` of evaluate_images.py, with upstream's defaults."""

    threshold: float = 0.3
    """Detections must score strictly above this."""
    counting_threshold: float = 0.9
    """Used instead of ``threshold`` for every class when the prompt's tag is ``counting``."""
    max_objects: int = 16
    """At most this many detections per class, taken before NMS."""
    max_overlap: float = 1.0
    """Greedy NMS drops boxes with IoU >= this; exactly 1.0 disables NMS."""
    position_threshold: float = 0.1
    """Relative-position margin as a fraction of the summed box extents."""

    @classmethod
    def from_geneval(cls, cfg: GenEvalConfig) -> RuleConfig:
        return cls(threshold=cfg.threshold, counting_threshold=cfg.counting_threshold,
                   max_objects=cfg.max_objects, max_overlap=cfg.max_overlap,
                   position_threshold=cfg.position_threshold)


# ----------------------------------------------------------------------------
# Geometry

def compute_iou(box_a, box_b) -> float:
    """IoU of two ``(x1, y1, x2, y2, ...)`` boxes, areas counted as ``(x2 - x1 + 1) * (y2 - y1 + 1)``.

    The +1 pixel convention follows evaluate_images.py ``compute_iou``, so boxes that merely
    touch (x2 of one == x1 of the other) still overlap by one pixel column.
    """
    def area(x1, y1, x2, y2):
        return max(x2 - x1 + 1, 0) * max(y2 - y1 + 1, 0)

    inter = area(max(box_a[0], box_b[0]), max(box_a[1], box_b[1]),
                 min(box_a[2], box_b[2]), min(box_a[3], box_b[3]))
    union = area(*box_a[:4]) + area(*box_b[:4]) - inter
    return float(inter / union) if union else 0.0


def relative_position(box_a, box_b, position_threshold: float = 0.1) -> set[str]:
    """Relations that hold for "A <rel> B" (GenEval ``relative_position``; image y points down).

    The offset between box centres is shrunk by ``position_threshold`` of the summed box
    extents per axis, then divided by the norm of the *unrevised* offset, as upstream does.
    """
    a = np.asarray(box_a[:4], dtype=float)
    b = np.asarray(box_b[:4], dtype=float)
    center_a, center_b = (a[:2] + a[2:]) / 2, (b[:2] + b[2:]) / 2
    extent_a, extent_b = np.abs(a[2:] - a[:2]), np.abs(b[2:] - b[:2])
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - position_threshold * (extent_a + extent_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


# ----------------------------------------------------------------------------
# Detections -> per-class object lists (evaluate_images.py ``evaluate_image``)

def filter_detections(metadata: dict, detections: list[Detection], cfg: RuleConfig) -> dict[str, list[Detection]]:
    """Per class: sort by score, keep ``score > T``, cap at ``max_objects``, then greedy NMS.

    Classes appear in order of their first raw detection (upstream: object_names.txt order);
    classes with nothing kept are absent. Ties in score keep their input order (upstream's
    ``np.argsort`` does not promise any tie order).
    """
    threshold = cfg.counting_threshold if metadata["tag"] == "counting" else cfg.threshold
    by_class: dict[str, list[Detection]] = {}
    for det in detections:
        by_class.setdefault(det.label, []).append(det)
    detected = {}
    for label, dets in by_class.items():
        ranked = sorted(dets, key=lambda d: d.score, reverse=True)
        ranked = [d for d in ranked if d.score > threshold][:cfg.max_objects]  # cap before NMS, as upstream
        kept = _greedy_nms(ranked, cfg.max_overlap)
        if kept:
            detected[label] = kept
    return detected


def _greedy_nms(ranked: list[Detection], max_overlap: float) -> list[Detection]:
    # evaluate_images.py: `NMS_THRESHOLD == 1 or iou < NMS_THRESHOLD` -> no NMS at exactly 1.0.
    if max_overlap == 1:
        return list(ranked)
    kept = []
    remaining = list(ranked)
    while remaining:
        best = remaining.pop(0)
        kept.append(best)
        remaining = [d for d in remaining if compute_iou(best.box, d.box) < max_overlap]
    return kept


# ----------------------------------------------------------------------------
# Decision (evaluate_images.py ``evaluate``)

ColorsOf = Callable[[str, list[Detection]], list[str]]
"""``colors_of(classname, found) -> one colour name per detection in found``."""


def evaluate_image(metadata: dict, detected: dict[str, list[Detection]], cfg: RuleConfig,
                   colors_of: ColorsOf | None = None) -> tuple[bool, str]:
    """Upstream's decision: include clauses ANDed in order, exclude clauses ORed.

    ``detected`` comes from ``filter_detections`` (each class sorted by score). Colour and
    position are judged only on the top-``count`` detections of a class. ``colors_of(classname,
    found)`` names the colour of each found detection (GenEval: CLIP on the masked crop); by
    default each detection's own ``.color`` is used. Returns ``(correct, reasons joined by "\\n")``.
    """
    colors_of = colors_of or _own_colors
    reasons = []
    matched_groups: list[list[Detection] | None] = []
    for req in metadata.get("include", []):
        found, failure = _check_include(req, detected, matched_groups, cfg, colors_of)
        matched_groups.append(None if failure else found)
        if failure:
            reasons.append(failure)
    for req in metadata.get("exclude", []):
        num_found = len(detected.get(req["class"], []))
        if num_found >= req["count"]:
            reasons.append(f"expected {req['class']}<{req['count']}, found {num_found}")
    return not reasons, "\n".join(reasons)


def _check_include(req: dict, detected: dict[str, list[Detection]], matched_groups: list,
                   cfg: RuleConfig, colors_of: ColorsOf) -> tuple[list[Detection], str | None]:
    """The top-``count`` detections of the clause's class and the failure reason (None if it matched)."""
    classname, count = req["class"], req["count"]
    found = detected.get(classname, [])[:count]
    if len(found) < count:
        return found, f"expected {classname}>={count}, found {len(found)}"
    if "color" in req:
        colors = colors_of(classname, found)
        if len(colors) != len(found):
            raise ValueError(f"colors_of returned {len(colors)} colours for {len(found)} {classname!r} detections; "
                             "it must name one colour per detection, in order")
        failure = _check_color(classname, count, req["color"], colors)
        if failure:
            return found, failure
    if "position" in req:
        relation, group = req["position"]
        if matched_groups[group] is None:
            return found, f"no target for {classname} to be {relation}"
        return found, _check_position(classname, relation, found, matched_groups[group], cfg)
    return found, None


def _check_color(classname: str, count: int, target: str, colors: list[str]) -> str | None:
    # Upstream counts matches among the top-`count` objects, so every one of them must match.
    if colors.count(target) >= count:
        return None
    tally = ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors)
    return f"expected {target} {classname}>={count}, found {colors.count(target)} {target}; and {tally}"


def _check_position(classname: str, relation: str, found: list[Detection], targets: list[Detection],
                    cfg: RuleConfig) -> str | None:
    # Every found object must stand in `relation` to every target; upstream stops at the first failure.
    for obj in found:
        for target in targets:
            relations = relative_position(obj.box, target.box, cfg.position_threshold)
            if relation not in relations:
                actual = " and ".join(r for r in RELATIONS if r in relations)
                return f"expected {classname} {relation} target, found {actual} target"
    return None


def _own_colors(classname: str, found: list[Detection]) -> list[str]:
    missing = [d for d in found if d.color is None]
    if missing:
        raise ValueError(f"a colour clause for {classname!r} met detections without a colour; the detector "
                         "does not read colour, so pass colors_of (e.g. a CLIP ColorClassifier)")
    return [d.color for d in found]


# ----------------------------------------------------------------------------
# Output record (one line of results.jsonl)

def details_json(detected: dict[str, list[Detection]]) -> str:
    """``{class: [[x1, y1, x2, y2, score], ...]}`` as a JSON string (upstream's ``details``)."""
    return json.dumps({label: [[float(v) for v in (*d.box, d.score)] for d in dets]
                       for label, dets in detected.items()})


def result_record(filename: str, metadata: dict, correct: bool, reason: str,
                  detected: dict[str, list[Detection]]) -> dict:
    """One results.jsonl record with upstream's fields; ``metadata`` is stored as a JSON string."""
    return {
        "filename": filename,
        "tag": metadata["tag"],
        "prompt": metadata["prompt"],
        "correct": bool(correct),
        "reason": reason,
        "metadata": json.dumps(metadata),
        "details": details_json(detected),
    }
