"""Configuration of the GenEval evaluator (the ``geneval:`` section of the run config)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from validation import Rule, at_least, between, check_numbers, flatten


@dataclass
class GenEvalConfig:
    detector: str = "hf"
    """Detector backend: ``shapes`` (shapes world), ``hf`` (transformers Mask2Former + CLIP) or ``mmdet``."""
    detector_path: str = "auto"
    """Object detector weights: a local folder or a Hugging Face id already in the local cache. ``auto``
    (``hf`` backend): GenEval's own Mask2Former converted by scripts/convert_mmdet_mask2former.py when
    present, else ``facebook/mask2former-swin-small-coco-instance`` (GenEval-style scores, with a warning)."""
    preprocess: str = "mmdet2"
    """``hf`` backend image preprocessing: ``mmdet2`` (GenEval's mmdet 2.x test pipeline: uint8 cv2 resize,
    pad 128 before normalising) or ``mmdet3`` (float resize, zero pad after normalising)."""
    clip_path: str = "openai/clip-vit-large-patch14"
    """CLIP used for colour clauses (GenEval: OpenAI ViT-L/14), local folder or cached id."""
    threshold: float = 0.3
    """Detections must score strictly above this (evaluate_images.py ``threshold``)."""
    counting_threshold: float = 0.9
    """Threshold used instead for every class of a ``counting`` prompt."""
    max_objects: int = 16
    """At most this many detections per class are kept, before NMS."""
    max_overlap: float = 1.0
    """NMS IoU threshold; 1.0 (the official default) disables NMS."""
    position_threshold: float = 0.1
    """Relative-position margin, as a fraction of the summed box extents."""
    bgcolor: str = "#999"
    """Fill outside the object mask for colour crops; ``original`` keeps the image pixels."""
    crop: bool = True
    """Crop colour queries to the object's box (GenEval ``crop=1``)."""
    batch_size: int = 16
    """Images per detector forward."""
    device: str = "auto"
    """``auto`` picks cuda:LOCAL_RANK when available, else cpu."""


GENEVAL_RULES: dict[str, Rule] = {
    "threshold": between(0, 1), "counting_threshold": between(0, 1), "max_objects": at_least(1),
    "max_overlap": between(0, 1), "position_threshold": at_least(0), "batch_size": at_least(1),
}
"""Valid ranges of the numeric settings (scores and IoUs are in [0, 1])."""


def check_geneval_config(cfg: GenEvalConfig, prefix: str = "") -> None:
    """Refuse non-finite and out-of-range numbers (ValueError naming ``prefix + key``)."""
    check_numbers(flatten(asdict(cfg), prefix), {prefix + key: rule for key, rule in GENEVAL_RULES.items()})
