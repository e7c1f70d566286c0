"""The ``hf`` backend: transformers Mask2Former instances plus CLIP colours, no mmdet needed.

GenEval's official scorer runs mmdetection 2.x's Mask2Former Swin-S (djghosh13/geneval
evaluation/evaluate_images.py, weights from evaluation/download_models.sh). This backend runs
transformers' port of Mask2Former with mmdetection's test-time processing rather than
transformers' own (which resizes every mask to 384x384 and uses nearest upsampling).

Weights (``geneval.detector_path``): the default ``auto`` loads GenEval's own checkpoint
converted by ``scripts/convert_mmdet_mask2former.py`` (``official_folder()``) when it is there,
and otherwise ``facebook/mask2former-swin-small-coco-instance``, which comes from the
detectron2 training run of Mask2Former, not GenEval's: its scores are GenEval-style, not
official GenEval numbers, and a warning says so. ``describe_weights`` names the weights in
every results file. Only converted official weights with ``preprocess=mmdet2`` give official
numbers (docs/geneval.md).

Preprocessing (``geneval.preprocess``):

- ``mmdet2`` (default, what GenEval ran; mmdet 2.x configs/mask2former/
  mask2former_r50_lsj_8x2_50e_coco.py ``test_pipeline``): keep-ratio ``Resize`` to fit
  (1333, 800) with cv2 ``INTER_LINEAR`` on the uint8 image, so the result is uint8 as
  ``mmcv.imrescale`` returns it; ``Pad(size_divisor=32, pad_val=128)`` on the bottom/right;
  then ``Normalize`` (ImageNet mean/std), so the padding is normalised grey 128. cv2's uint8
  bilinear is fixed-point and differs from float bilinear rounded (by one grey level on many
  pixels), so cv2 itself does the resize (``opencv-python-headless``).
- ``mmdet3``: mmdet 3.x's order (``DetDataPreprocessor``): float bilinear resize without
  rounding, normalise, then zero padding. Same as ``mmdet2`` up to the uint8 rounding for
  images whose resized size is a multiple of 32 (e.g. square ones), different elsewhere.

Post-processing, ``instance_results``: mmdet ``MaskFormerFusionHead.instance_postprocess``.
Mask logits are upsampled to the padded input, the padding is cut off, and the rest is
upsampled to the image size (bilinear). Scores are ``softmax`` class probabilities without
no-object, times the mean sigmoid mask probability inside the binary mask (logit > 0).
The top 100 over queries x classes are kept, and each box is the mask's tight box
``[x_min, y_min, x_max + 1, y_max + 1]`` (mmdet ``mask2bbox``; an empty mask gives zeros).
Images are batched by shape (``cfg.batch_size`` at a time), so a batch never adds padding and
batched results equal one-at-a-time results.

Labels: the checkpoint's ``id2label`` names are mapped onto GenEval's spelling of the COCO
classes (``geneval.suites.COCO_CLASSES``) through ``LABEL_ALIASES``. Only detections of the
classes the prompts ask for are returned; the top 100 is still taken over all classes, as
in mmdet, so this drops nothing the rules could look at.

Weights are never downloaded: ``detector_path`` and ``clip_path`` must be local
``save_pretrained`` folders or Hugging Face ids already in the local cache. To fetch them,
on a machine with internet access::

    wget <OFFICIAL_CHECKPOINTS["mmdet2"]> && python scripts/convert_mmdet_mask2former.py <that .pth>
    hf download openai/clip-vit-large-patch14
    hf download facebook/mask2former-swin-small-coco-instance   # only for GenEval-style scores

(``huggingface-cli download`` with older huggingface_hub; ``--local-dir DIR`` for a folder).

Tests: ``python -m pytest -q tests/test_detectors_hf.py tests/test_mmdet_convert.py``.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from geneval.config import GenEvalConfig
from geneval.detection import Detection
from geneval.detectors.clip_color import CLIPColorClassifier, HFCLIPEncoder
from geneval.detectors.mmdet_convert import AUTO_WEIGHTS, official_folder, read_provenance, resolve_detector_path
from geneval.suites import COCO_CLASSES
from hub import local_snapshot

TEST_SCALE = (1333, 800)
"""mmdet test ``Resize(scale=(1333, 800), keep_ratio=True)``: long side <= 1333, short side <= 800."""
SIZE_DIVISOR = 32
"""mmdet 2.x ``Pad(size_divisor=32)``, 3.x ``DetDataPreprocessor(pad_size_divisor=32)``."""
PAD_VALUE = 128
"""mmdet 2.x instance config: ``Pad(..., pad_val=dict(img=(128, 128, 128), ...))`` before ``Normalize``."""
PREPROCESSING = ("mmdet2", "mmdet3")
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
"""RGB mean/std on 0..255 pixels, shared by the mmdet config and the HF Mask2Former checkpoints."""
MAX_PER_IMAGE = 100
"""mmdet Mask2Former ``test_cfg.max_per_image``."""

# COCO label spellings found in checkpoints (HF/detectron2 names, VOC-style names) that differ
# from GenEval's evaluation/object_names.txt, which renames three mmdet classes.
LABEL_ALIASES = {
    "mouse": "computer mouse",
    "remote": "tv remote",
    "keyboard": "computer keyboard",
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "sofa": "couch",
    "pottedplant": "potted plant",
    "diningtable": "dining table",
    "tvmonitor": "tv",
    "tv monitor": "tv",
    "hair dryer": "hair drier",
}
DEFAULT_DETECTOR = "facebook/mask2former-swin-small-coco-instance"
DEFAULT_CLIP = "openai/clip-vit-large-patch14"


# ----------------------------------------------------------------------------
# Checkpoints and labels

def pretrained_folder(name_or_path: str, field: str, default_repo: str, cache_dir: str | None = None) -> str:
    """A local folder holding ``name_or_path``: the folder itself or its snapshot in the HF cache.

    Nothing is downloaded. ``field`` and ``default_repo`` only shape the error message.
    """
    def missing(invalid_id: bool, cache: str) -> Exception:
        repo = default_repo if invalid_id else name_or_path
        return FileNotFoundError(
            f"geneval.{field}={name_or_path!r} is neither a local folder nor a model in the Hugging Face "
            f"cache ({cache}). Weights are never downloaded during evaluation; fetch them first on a "
            f"machine with internet access: `hf download {repo}` (older huggingface_hub: "
            f"`huggingface-cli download {repo}`) into that cache (set HF_HOME to move it), or "
            f"`hf download {repo} --local-dir DIR` and set geneval.{field}=DIR.")

    return local_snapshot(name_or_path, missing, cache_dir)


def _normalize_label(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


def geneval_label_names(id2label: dict[int, str], classes: list[str]) -> list[str]:
    """GenEval class name for each model label id ``0..N-1`` (the no-object logit ``N`` has no entry).

    A name is kept when it is a GenEval class (COCO or one the prompts ask for) and otherwise
    goes through ``LABEL_ALIASES``; anything else means the checkpoint is not a COCO instance
    model, and every class the prompts ask for must be detectable.
    """
    vocabulary = set(COCO_CLASSES) | set(classes)
    id2label = {int(i): label for i, label in id2label.items()}
    if sorted(id2label) != list(range(len(id2label))):
        raise ValueError(f"detector id2label must cover ids 0..{len(id2label) - 1} without gaps, "
                         f"got {sorted(id2label)}")
    names = []
    for i in range(len(id2label)):
        name = _normalize_label(id2label[i])
        name = name if name in vocabulary else LABEL_ALIASES.get(name, name)
        if name not in vocabulary:
            raise ValueError(f"detector label {i} {id2label[i]!r} is not a COCO class GenEval knows; "
                             "use a COCO instance-segmentation checkpoint or add the spelling to LABEL_ALIASES")
        names.append(name)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"several detector labels map to the same GenEval class: {duplicates}")
    missing = sorted(set(classes) - set(names))
    if missing:
        raise ValueError(f"the detector cannot detect {missing}, which the prompts ask for; "
                         "use a checkpoint whose id2label includes them")
    return names


# ----------------------------------------------------------------------------
# mmdet test-time processing

def rescaled_size(height: int, width: int, scale: tuple[int, int] = TEST_SCALE) -> tuple[int, int]:
    """mmcv ``rescale_size``: the largest aspect-preserving size inside ``scale``, rounded half up."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """mmdet ``mask2bbox``: ``[N, 4]`` float ``(x_min, y_min, x_max + 1, y_max + 1)``, zeros if empty."""
    num, height, width = masks.shape
    cols, rows = masks.any(dim=1), masks.any(dim=2)  # [N, W], [N, H]
    x_min = cols.float().argmax(dim=1)
    x_end = width - cols.flip(1).float().argmax(dim=1)
    y_min = rows.float().argmax(dim=1)
    y_end = height - rows.flip(1).float().argmax(dim=1)
    boxes = torch.stack([x_min, y_min, x_end, y_end], dim=1).float()
    return boxes * cols.any(dim=1, keepdim=True)


def instance_results(class_logits: torch.Tensor, mask_logits: torch.Tensor, padded_hw: tuple[int, int],
                     resized_hw: tuple[int, int], image_hw: tuple[int, int], max_per_image: int = MAX_PER_IMAGE
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's (labels, scores, boxes, masks), sorted by score, as mmdet's fusion head makes them.

    ``class_logits [Q, C+1]`` (last = no-object) and ``mask_logits [Q, h, w]`` are raw model outputs.
    """
    masks = F.interpolate(mask_logits[None], size=padded_hw, mode="bilinear", align_corners=False)
    masks = masks[:, :, :resized_hw[0], :resized_hw[1]]
    masks = F.interpolate(masks, size=image_hw, mode="bilinear", align_corners=False)[0]
    probs = class_logits.softmax(dim=-1)[:, :-1]
    num_classes = probs.shape[1]
    class_scores, flat = probs.flatten().topk(min(max_per_image, probs.numel()))
    labels, queries = flat % num_classes, flat // num_classes
    masks = masks[queries]
    binary = masks > 0
    mask_scores = (masks.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    scores = class_scores * mask_scores
    order = scores.argsort(descending=True, stable=True)
    return labels[order], scores[order], mask_boxes(binary)[order], binary[order]


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """mmcv ``imnormalize``: ``(x - mean) * (1 / std)`` in float32, channels in dim 1."""
    mean = torch.tensor(PIXEL_MEAN, device=pixels.device).view(1, 3, 1, 1)
    stdinv = (1 / torch.tensor(PIXEL_STD, dtype=torch.float64)).float().to(pixels.device).view(1, 3, 1, 1)
    return (pixels - mean) * stdinv


def padded_size(height: int, width: int, divisor: int = SIZE_DIVISOR) -> tuple[int, int]:
    return math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor


def mmdet2_inputs(images: list[np.ndarray], scale: tuple[int, int] = TEST_SCALE,
                  pad_value: int = PAD_VALUE) -> tuple[torch.Tensor, tuple[int, int]]:
    """mmdet 2.x test pipeline on same-shape uint8 RGB images: ``[B, 3, H', W']`` and the resized size.

    ``Resize(keep_ratio=True)`` = ``mmcv.imrescale`` = ``cv2.resize(..., INTER_LINEAR)`` on uint8
    (mmcv/image/geometric.py); ``Pad(size_divisor=32, pad_val=128)``; ``Normalize``. Resizing
    is per channel, so RGB gives the same pixels as GenEval's BGR + ``to_rgb``.
    """
    import cv2

    resized_hw = rescaled_size(*images[0].shape[:2], scale)
    batch = np.full((len(images), *padded_size(*resized_hw), 3), pad_value, dtype=np.uint8)
    for i, image in enumerate(images):
        batch[i, :resized_hw[0], :resized_hw[1]] = cv2.resize(image, resized_hw[::-1],
                                                              interpolation=cv2.INTER_LINEAR)
    return normalize(torch.from_numpy(batch).permute(0, 3, 1, 2).float()), resized_hw


def mmdet3_inputs(images: list[np.ndarray], scale: tuple[int, int] = TEST_SCALE,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, tuple[int, int]]:
    """mmdet 3.x order: float bilinear resize (not rounded), normalise, zero padding (``DetDataPreprocessor``)."""
    pixels = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float()
    resized_hw = rescaled_size(*images[0].shape[:2], scale)
    if resized_hw != tuple(pixels.shape[-2:]):
        pixels = F.interpolate(pixels, size=resized_hw, mode="bilinear", align_corners=False)
    padded_hw = padded_size(*resized_hw)
    return F.pad(normalize(pixels), (0, padded_hw[1] - resized_hw[1], 0, padded_hw[0] - resized_hw[0])), resized_hw


def same_shape_batches(images: list[np.ndarray], batch_size: int) -> list[list[int]]:
    """Indices of ``images`` in batches of at most ``batch_size`` images of one shape, in order."""
    by_shape: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(i)
    return [group[start:start + batch_size] for group in by_shape.values()
            for start in range(0, len(group), batch_size)]


def check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"detectors take uint8 [H, W, 3] RGB images, got {image.dtype} {image.shape}")
    return image


# ----------------------------------------------------------------------------
# The detector

class HFMask2FormerDetector:
    """``Detector`` over a transformers ``Mask2FormerForUniversalSegmentation`` (see the module docstring)."""

    def __init__(self, model, label_names: list[str], classes: list[str], device: torch.device,
                 batch_size: int = 16, scale: tuple[int, int] = TEST_SCALE, preprocessing: str = "mmdet2"):
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"geneval.preprocess={preprocessing!r}; valid: {list(PREPROCESSING)}")
        self.model, self.label_names, self.device = model, label_names, device
        self.keep = set(classes)
        self.batch_size, self.scale, self.preprocessing = batch_size, scale, preprocessing

    def preprocess(self, images: list[np.ndarray]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Same-shape uint8 images to padded, normalised ``[B, 3, H', W']`` and the unpadded size."""
        if self.preprocessing == "mmdet2":
            pixels, resized_hw = mmdet2_inputs(images, self.scale)
            return pixels.to(self.device), resized_hw
        return mmdet3_inputs(images, self.scale, self.device)

    @torch.no_grad()
    def _detect_batch(self, images: list[np.ndarray]) -> list[list[Detection]]:
        pixels, resized_hw = self.preprocess(images)
        out = self.model(pixel_values=pixels)
        image_hw = images[0].shape[:2]
        results = []
        for class_logits, mask_logits in zip(out.class_queries_logits.float(), out.masks_queries_logits.float()):
            labels, scores, boxes, masks = instance_results(
                class_logits, mask_logits, tuple(pixels.shape[-2:]), resized_hw, image_hw)
            results.append(self._detections(labels, scores, boxes, masks))
        return results

    def _detections(self, labels, scores, boxes, masks) -> list[Detection]:
        labels, scores, boxes, masks = labels.tolist(), scores.tolist(), boxes.tolist(), masks.cpu().numpy()
        return [Detection(label=self.label_names[label], box=tuple(box), score=score, mask=mask)
                for label, score, box, mask in zip(labels, scores, boxes, masks)
                if self.label_names[label] in self.keep]

    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        images = [check_image(image) for image in images]
        results: list[list[Detection] | None] = [None] * len(images)
        for batch in same_shape_batches(images, self.batch_size):
            for i, detections in zip(batch, self._detect_batch([images[i] for i in batch])):
                results[i] = detections
        return results


# ----------------------------------------------------------------------------
# Loading

def detector_folder(cfg: GenEvalConfig) -> str:
    """The local folder of ``cfg.detector_path`` (``auto``: official converted weights, else the HF default)."""
    path = resolve_detector_path(cfg.detector_path, DEFAULT_DETECTOR)
    if cfg.detector_path == AUTO_WEIGHTS and path == DEFAULT_DETECTOR:
        try:
            return pretrained_folder(path, "detector_path", DEFAULT_DETECTOR)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"geneval.detector_path=auto found neither GenEval's converted detector ({official_folder()}) nor "
                f"{DEFAULT_DETECTOR} in the Hugging Face cache. For official GenEval numbers convert GenEval's own "
                "checkpoint (docs/geneval.md): python scripts/convert_mmdet_mask2former.py "
                "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth") from err
    return pretrained_folder(path, "detector_path", DEFAULT_DETECTOR)


def describe_weights(cfg: GenEvalConfig) -> dict:
    """What the results were scored with: resolved weights, their origin, and whether scores are official."""
    path = resolve_detector_path(cfg.detector_path, DEFAULT_DETECTOR)
    provenance = read_provenance(path) if Path(path).is_dir() else None
    official = provenance is not None and provenance.official and cfg.preprocess == "mmdet2"
    source = provenance.describe() if provenance else "not converted from GenEval's mmdet checkpoint"
    return {"backend": "hf", "weights": path, "source": source, "preprocess": cfg.preprocess,
            "scores": "official GenEval" if official else "GenEval-style (not official GenEval numbers)"}


def describe(cfg: GenEvalConfig) -> str:
    d = describe_weights(cfg)
    return f"hf {d['weights']} [{d['source']}; preprocess={d['preprocess']}]: {d['scores']} scores"


def warn_if_not_official(cfg: GenEvalConfig) -> None:
    description = describe_weights(cfg)
    if description["scores"] != "official GenEval":
        warnings.warn(
            f"geneval: detector {description['weights']} ({description['source']}, preprocess={cfg.preprocess}) "
            "gives GenEval-style scores, not official GenEval numbers. Official numbers need GenEval's own "
            "Mask2Former checkpoint converted with scripts/convert_mmdet_mask2former.py and preprocess=mmdet2 "
            "(docs/geneval.md).", stacklevel=2)


def load_detector(cfg: GenEvalConfig, device: torch.device, classes: list[str]) -> HFMask2FormerDetector:
    from transformers import Mask2FormerForUniversalSegmentation

    folder = detector_folder(cfg)
    warn_if_not_official(cfg)
    model = Mask2FormerForUniversalSegmentation.from_pretrained(folder).to(device).eval()
    names = geneval_label_names(model.config.id2label, classes)
    return HFMask2FormerDetector(model, names, classes, device, batch_size=cfg.batch_size,
                                 preprocessing=cfg.preprocess)


def load_color_classifier(cfg: GenEvalConfig, device: torch.device) -> CLIPColorClassifier:
    folder = pretrained_folder(cfg.clip_path, "clip_path", DEFAULT_CLIP)
    return CLIPColorClassifier(HFCLIPEncoder.from_folder(folder, device), device, bgcolor=cfg.bgcolor, crop=cfg.crop)


def build(cfg: GenEvalConfig, device: torch.device, classes: list[str]
          ) -> tuple[HFMask2FormerDetector, CLIPColorClassifier]:
    return load_detector(cfg, device, classes), load_color_classifier(cfg, device)
