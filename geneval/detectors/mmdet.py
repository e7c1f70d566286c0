"""The ``mmdet`` backend: mmdetection's Mask2Former Swin-S plus open_clip ViT-L-14, for official parity.

This is the detector and colour model of GenEval's own scorer (djghosh13/geneval
evaluation/evaluate_images.py), on whichever mmdetection is installed:

- mmdet 2.x (what GenEval ran; requirements-mmdet.txt): ``CONFIG_NAMES[2]``, GenEval's own
  config, with the 2.x checkpoint GenEval downloads (``CHECKPOINT_URLS[2]``), run through
  ``mmdet.apis.inference_detector`` as evaluate_images.py does.
- mmdet 3.3 (requirements-mmdet3.txt, the nearest on newer torch): ``CONFIG_NAMES[3]``, the 3.x
  name of the same config, with the 3.x re-release of the weights (``CHECKPOINT_URLS[3]``).
  Its test pipeline pads with 0 after normalising instead of 128 before, so non-square images
  are scored slightly differently (docs/geneval.md).

A checkpoint of the other layout is refused (a mismatched checkpoint is how GenEval users got
all-zero scores, geneval issues #6 and #8).
- colours: ``open_clip.create_model_and_transforms("ViT-L-14", pretrained="openai")`` and its
  val transform, run through ``geneval.detectors.clip_color.CLIPColorClassifier`` (GenEval's
  templates, crops and head). open_clip fetches the weights from the Hugging Face repo
  ``OPEN_CLIP_REPO`` (open_clip 3.x) or OpenAI's URL into ~/.cache/clip (2.x); it must already be there.

Install (its own virtual environment): ``bash scripts/install_mmdet.sh`` (mmdet 2.x, torch 1.13.1,
mmcv-full 1.7.1 built from source) or ``MMDET=3 bash scripts/install_mmdet.sh`` (mmdet 3.3, torch
2.14.1, mmcv 2.1.0 built from source). mmdet and open_clip are imported inside ``build`` so that
this module imports without them.

Checkpoint loading: mmdet checkpoints keep numpy objects in their ``meta``, which torch >= 2.6
refuses under its default ``torch.load(weights_only=True)`` ("Weights only load failed").
mmengine's loader then needs ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` in the environment; this
module instead calls ``torch.load(..., weights_only=False)`` itself, so no environment
variable is needed. That unpickles arbitrary objects: only load checkpoints you trust.

Images are fed as BGR arrays, as ``LoadImageFromFile`` reads them in GenEval; the model's
data preprocessor converts back to RGB (``bgr_to_rgb=True``).

Tests: ``python -m pytest -q tests/test_detectors_mmdet.py`` (skipped without mmdet).
"""
from __future__ import annotations

import copy
import importlib
import os

import numpy as np
import torch

from geneval.config import GenEvalConfig
from geneval.detection import Detection
from geneval.detectors.clip_color import CLIPColorClassifier
from geneval.detectors.hf import DEFAULT_CLIP, TEST_SCALE, check_image, same_shape_batches
from geneval.detectors.mmdet_convert import OFFICIAL_CHECKPOINTS, sha256_file
from geneval.suites import COCO_CLASSES

CONFIG_NAMES = {2: "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.py",
                3: "mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco.py"}
"""GenEval's config (evaluate_images.py ``--model-config`` default) and its mmdet 3.x name."""
CHECKPOINT_URLS = {2: OFFICIAL_CHECKPOINTS["mmdet2"], 3: OFFICIAL_CHECKPOINTS["mmdet3"]}
CONFIG_NAME, CHECKPOINT_URL = CONFIG_NAMES[3], CHECKPOINT_URLS[3]
OPEN_CLIP_MODEL = ("ViT-L-14", "openai")
OPEN_CLIP_REPO = "timm/vit_large_patch14_clip_224.openai"
"""Where open_clip 3.x fetches ViT-L-14 ``openai`` weights from (open_clip/pretrained.py ``hf_hub``)."""
INSTALL_HINT = "install the mmdet extra in its own virtual environment: bash scripts/install_mmdet.sh"


# ----------------------------------------------------------------------------
# Detector

def mmdet_major() -> int:
    import mmdet

    major = int(mmdet.__version__.split(".")[0])
    if major not in CONFIG_NAMES:
        raise ImportError(f"mmdet {mmdet.__version__} is neither 2.x nor 3.x; {INSTALL_HINT}")
    return major


def config_path() -> str:
    """The Mask2Former Swin-S COCO instance config shipped inside the installed mmdet wheel."""
    import mmdet

    name = CONFIG_NAMES[mmdet_major()]
    path = os.path.join(os.path.dirname(mmdet.__file__), ".mim", "configs", "mask2former", name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: mmdet {mmdet.__version__} does not ship {name}; {INSTALL_HINT}")
    return path


def _config_class():
    if mmdet_major() == 2:
        from mmcv import Config
    else:
        from mmengine.config import Config
    return Config


def checkpoint_state(path: str) -> dict[str, torch.Tensor]:
    """The state dict of an mmdet ``.pth`` checkpoint (see the module docstring on ``weights_only``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"geneval.detector_path={path!r} is not a file. The mmdet backend needs mmdetection's Mask2Former "
            f"Swin-S checkpoint for the installed mmdet: `wget {CHECKPOINT_URLS[2]}` (mmdet 2.x, GenEval's) or "
            f"`wget {CHECKPOINT_URL}` (mmdet 3.x), and geneval.detector_path set to it.")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint.get("state_dict", checkpoint)
    return {name.removeprefix("module."): tensor for name, tensor in state.items()}


def load_model(checkpoint: str, device: torch.device):
    """mmdet's Mask2Former Swin-S with the weights of ``checkpoint``, in eval mode on ``device``."""
    from mmdet.apis import init_detector

    state = checkpoint_state(checkpoint)
    config = _config_class().fromfile(config_path())
    config.model.backbone.init_cfg = None  # the checkpoint holds the backbone; do not fetch Swin-S weights
    model = init_detector(config, None, device=str(device))
    missing = [name for name, _ in model.named_parameters() if name not in state]
    if missing:
        raise ValueError(
            f"{checkpoint} lacks {len(missing)} of the model's parameters (e.g. {missing[:3]}); it is not a "
            f"checkpoint for mmdet {mmdet_major()}.x {CONFIG_NAMES[mmdet_major()]} (the 2.x and 3.x releases name "
            f"their parameters differently); use {CHECKPOINT_URLS[mmdet_major()]}")
    model.load_state_dict(state, strict=False)
    return model


def inference_pipeline(model_cfg, scale: tuple[int, int] = TEST_SCALE):
    """The config's test pipeline for in-memory BGR arrays, without its ground-truth loading step.

    As ``mmdet.apis.inference_detector`` does, the file loader becomes ``LoadImageFromNDArray``
    (keeping ``to_float32=True``); ``LoadAnnotations`` is dropped, as the config's own comment
    says to do without annotations. ``scale`` replaces the ``Resize`` scale (tests use a small one).
    """
    from mmcv.transforms import Compose
    from mmdet.utils import get_test_pipeline_cfg

    steps = [step for step in copy.deepcopy(get_test_pipeline_cfg(model_cfg))
             if not step["type"].endswith("LoadAnnotations")]
    steps[0]["type"] = "mmdet.LoadImageFromNDArray"
    for step in steps:
        if step["type"].endswith("Resize"):
            step["scale"] = scale
    return Compose(steps)


class MMDetMask2FormerDetector:
    """``Detector`` over an mmdet 3.x Mask2Former; labels index GenEval's COCO class list (mmdet order)."""

    def __init__(self, model, classes: list[str], batch_size: int = 16, pipeline=None):
        unknown = sorted(set(classes) - set(COCO_CLASSES))
        if unknown:
            raise ValueError(f"the mmdet COCO detector cannot detect {unknown}, which the prompts ask for")
        assert model.panoptic_fusion_head.num_things_classes == len(COCO_CLASSES)
        self.model, self.keep, self.batch_size = model, set(classes), batch_size
        self.mmdet2 = mmdet_major() == 2
        if self.mmdet2:
            self.pipeline = None  # inference_detector runs model.cfg's test pipeline
        else:
            self.pipeline = pipeline if pipeline is not None else inference_pipeline(model.cfg)

    @torch.no_grad()
    def _detect_batch(self, images: list[np.ndarray]) -> list[list[Detection]]:
        if self.mmdet2:
            return self._detect_batch_mmdet2(images)
        data = [self.pipeline({"img": np.ascontiguousarray(image[..., ::-1]), "img_id": i})
                for i, image in enumerate(images)]
        # The collated form mmengine's test loop passes: lists of inputs and data samples.
        samples = self.model.test_step({"inputs": [d["inputs"] for d in data],
                                        "data_samples": [d["data_samples"] for d in data]})
        return [self._detections(sample.pred_instances) for sample in samples]

    def _detect_batch_mmdet2(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """evaluate_images.py: ``inference_detector`` -> per class ``[x1, y1, x2, y2, score]`` rows and masks."""
        from mmdet.apis import inference_detector

        results = inference_detector(self.model, [np.ascontiguousarray(image[..., ::-1]) for image in images])
        batch = []
        for bbox_results, segm_results in results:
            detections = [Detection(label=COCO_CLASSES[label], box=tuple(float(v) for v in row[:4]),
                                    score=float(row[4]), mask=np.asarray(mask, dtype=bool))
                          for label, (rows, masks) in enumerate(zip(bbox_results, segm_results))
                          if COCO_CLASSES[label] in self.keep for row, mask in zip(rows, masks)]
            batch.append(sorted(detections, key=lambda d: -d.score))
        return batch

    def _detections(self, instances) -> list[Detection]:
        labels, scores = instances.labels.tolist(), instances.scores.tolist()
        boxes, masks = instances.bboxes.tolist(), instances.masks.cpu().numpy().astype(bool)
        return [Detection(label=COCO_CLASSES[label], box=tuple(box), score=score, mask=mask)
                for label, score, box, mask in zip(labels, scores, boxes, masks)
                if COCO_CLASSES[label] in self.keep]

    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        images = [check_image(image) for image in images]
        results: list[list[Detection] | None] = [None] * len(images)
        for batch in same_shape_batches(images, self.batch_size):
            for i, detections in zip(batch, self._detect_batch([images[i] for i in batch])):
                results[i] = detections
        return results


# ----------------------------------------------------------------------------
# Colours

def require_open_clip_weights(pretrained_cfg: dict) -> None:
    """Refuse before open_clip would download: 3.x reads the HF repo ``OPEN_CLIP_REPO``, 2.x (GenEval's
    2.20) OpenAI's URL into ``~/.cache/clip`` (open_clip/pretrained.py ``download_pretrained_from_url``)."""
    if pretrained_cfg.get("hf_hub"):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        repo = pretrained_cfg["hf_hub"].rstrip("/")
        try:
            snapshot_download(repo, local_files_only=True)
        except LocalEntryNotFoundError as err:
            raise FileNotFoundError(
                f"open_clip {OPEN_CLIP_MODEL} weights are not in the Hugging Face cache; fetch them first on a "
                f"machine with internet access: `hf download {repo}`") from err
        return
    url = pretrained_cfg.get("url", "")
    path = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
    if not url or not os.path.isfile(path):
        raise FileNotFoundError(f"open_clip {OPEN_CLIP_MODEL} weights are not at {path}; fetch them first on a "
                                f"machine with internet access: `wget -P ~/.cache/clip {url}`")


class OpenCLIPEncoder:
    """``ClipEncoder`` over an open_clip model, its val transform and tokenizer."""

    def __init__(self, model, transform, tokenizer, device: torch.device):
        self.model, self.transform, self.tokenizer, self.device = model, transform, tokenizer, device

    @classmethod
    def geneval(cls, device: torch.device) -> OpenCLIPEncoder:
        """GenEval's ViT-L-14 with OpenAI weights (evaluate_images.py ``load_models``)."""
        import open_clip

        arch, pretrained = OPEN_CLIP_MODEL
        require_open_clip_weights(open_clip.get_pretrained_cfg(arch, pretrained))
        model, _, transform = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device=device)
        return cls(model.eval(), transform, open_clip.get_tokenizer(arch), device)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels.to(self.device))

    def preprocess(self, image) -> torch.Tensor:
        return self.transform(image)


# ----------------------------------------------------------------------------
# Entry point

def _require(module: str, why: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"geneval.detector=mmdet needs {module} ({why}); {INSTALL_HINT}") from err


def describe(cfg: GenEvalConfig) -> str:
    try:
        major = mmdet_major()
    except ImportError:
        major = None
    if major == 2:
        official = os.path.isfile(cfg.detector_path) and sha256_file(cfg.detector_path)[:8] == "743b7d99"
        scores = "official GenEval scores" if official else "GenEval-style scores (not GenEval's checkpoint file)"
        return f"mmdet {cfg.detector_path} [mmdet 2.x, GenEval's {CONFIG_NAMES[2]}]: {scores}"
    return (f"mmdet {cfg.detector_path} [mmdet 3.x {CONFIG_NAME} test pipeline]: GenEval-style scores (GenEval ran "
            "mmdet 2.x, whose preprocessing differs on non-square images; docs/geneval.md)")


def build(cfg: GenEvalConfig, device: torch.device, classes: list[str]
          ) -> tuple[MMDetMask2FormerDetector, CLIPColorClassifier]:
    if cfg.clip_path != DEFAULT_CLIP:
        raise ValueError(f"geneval.clip_path={cfg.clip_path!r}: the mmdet backend always classifies colours with "
                         f"open_clip {OPEN_CLIP_MODEL}, as GenEval does; leave clip_path at {DEFAULT_CLIP!r} "
                         "or use geneval.detector=hf for another CLIP")
    _require("mmdet", "the Mask2Former detector")
    _require("open_clip", "GenEval's colour classifier, open_clip ViT-L-14")
    detector = MMDetMask2FormerDetector(load_model(cfg.detector_path, device), classes, cfg.batch_size)
    colors = CLIPColorClassifier(OpenCLIPEncoder.geneval(device), device, bgcolor=cfg.bgcolor, crop=cfg.crop)
    return detector, colors
