"""CLIP zero-shot colour classification of detected objects, as GenEval does it.

GenEval (djghosh13/geneval evaluation/evaluate_images.py, ``color_classification`` and
``ImageCrops``) decides an object's colour like this:

1. Crop: keep the pixels inside the object's mask and paint the rest ``bgcolor`` (``#999``
   grey; ``original`` keeps the image), then crop to the object's box (``crop=1``).
2. Head: one zero-shot head per object class, built by clip_benchmark's
   ``zero_shot_classifier`` from three templates per colour. Each template embedding is
   L2-normalised, the three are averaged and the mean is normalised again.
3. Score: ``100 * normalize(encode_image(crop)) @ head``; the colour is the argmax over
   ``geneval.detection.COLORS``. On CUDA everything runs under fp16 autocast (clip_benchmark's
   ``amp=True``); on CPU it runs in fp32.

``CLIPColorClassifier`` does exactly that on top of any ``ClipEncoder``. ``HFCLIPEncoder``
wraps a transformers ``CLIPModel`` (the default ``hf`` backend, built in
``geneval.detectors.hf``); the ``mmdet`` backend wraps open_clip instead. All crops of one
``classify`` call go through the image tower in a single forward.

Tests: ``python -m pytest -q tests/test_detectors_hf.py``.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from geneval.detection import COLORS, Detection

# clip_benchmark builds each head from these, filled first with the class name and then with
# ``{c}`` = the colour word (no a/an correction): evaluate_images.py ``color_classification``.
COLOR_TEMPLATES = (
    "a photo of a {c} {classname}",
    "a photo of a {c}-colored {classname}",
    "a photo of a {c} object",
)
# open_clip's OPENAI_DATASET_MEAN / OPENAI_DATASET_STD, used by the "openai" val transform.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
LOGIT_SCALE = 100.0
"""clip_benchmark ``run_classification``: ``logits = 100. * image_features @ classifier``."""


class ClipEncoder(Protocol):
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Unnormalised text embeddings ``[N, D]``."""
        ...

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised image embeddings ``[N, D]`` of preprocessed ``[N, 3, S, S]`` pixels."""
        ...

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One RGB crop to normalised ``[3, S, S]`` pixels."""
        ...


# ----------------------------------------------------------------------------
# Crops and CLIP preprocessing

def color_texts(classname: str, color: str) -> list[str]:
    """The three prompts whose embeddings make up ``color``'s column of ``classname``'s head."""
    return [template.format(c=color, classname=classname) for template in COLOR_TEMPLATES]


def object_crop(image: Image.Image, detection: Detection, bgcolor: str = "#999", crop: bool = True) -> Image.Image:
    """The image CLIP sees for one object (GenEval ``ImageCrops.__getitem__``).

    ``bgcolor`` is any PIL colour (``#999``) or ``original``. Pillow's ``crop`` rounds float
    box coordinates, as in GenEval; mask-derived boxes are integers anyway.
    """
    if detection.mask is not None:
        if detection.mask.shape != (image.height, image.width):
            raise ValueError(f"mask of shape {detection.mask.shape} does not match the image "
                             f"({image.height}, {image.width})")
        blank = image if bgcolor == "original" else Image.new("RGB", image.size, color=bgcolor)
        image = Image.composite(image, blank, Image.fromarray(np.asarray(detection.mask, dtype=bool)))
    if crop:
        image = image.crop(tuple(float(v) for v in detection.box[:4]))
    return image


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision ``Resize(size)`` output ``(width, height)``: shorter side ``size``, longer truncated."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def center_crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """torchvision ``CenterCrop(size)`` box on an image at least ``size`` on both sides."""
    left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
    return left, top, left + size, top + size


def clip_preprocess(image: Image.Image, size: int) -> torch.Tensor:
    """open_clip's "openai" val transform without torchvision.

    ``Resize(size, bicubic)`` on the PIL image, ``CenterCrop(size)``, ``ToTensor``, then
    ``Normalize(OPENAI_MEAN, OPENAI_STD)``; torchvision runs these same PIL operations.
    """
    if image.width == 0 or image.height == 0:
        raise ValueError(f"cannot classify the colour of an empty crop ({image.width}x{image.height}); "
                         "the detection's box has no area")
    image = image.convert("RGB")
    width, height = resized_size(image.width, image.height, size)
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    image = image.crop(center_crop_box(width, height, size))
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(OPENAI_MEAN).view(3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(3, 1, 1)
    return (pixels - mean) / std


# ----------------------------------------------------------------------------
# transformers CLIP

class HFCLIPEncoder:
    """``ClipEncoder`` over a transformers ``CLIPModel`` and its tokenizer."""

    def __init__(self, model, tokenizer, device: torch.device):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.image_size = int(model.config.vision_config.image_size)

    @classmethod
    def from_folder(cls, folder: str, device: torch.device) -> HFCLIPEncoder:
        """Load a ``save_pretrained`` folder (weights and tokenizer) onto ``device``."""
        from transformers import AutoTokenizer, CLIPModel

        model = CLIPModel.from_pretrained(folder).to(device).eval()
        return cls(model, AutoTokenizer.from_pretrained(folder), device)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        # Padding to the longest text instead of open_clip's 77 changes nothing: CLIP's text
        # tower is causal and pools at the end-of-text token, before any padding.
        tokens = self.tokenizer(texts, padding=True, return_tensors="pt").to(self.device)
        out = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return out.pooler_output

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values=pixels.to(self.device)).pooler_output

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return clip_preprocess(image, self.image_size)


# ----------------------------------------------------------------------------
# The classifier

class CLIPColorClassifier:
    """GenEval's colour check (see the module docstring); implements ``ColorClassifier``."""

    def __init__(self, encoder: ClipEncoder, device: torch.device, bgcolor: str = "#999", crop: bool = True):
        self.encoder, self.device, self.bgcolor, self.crop = encoder, device, bgcolor, crop
        self.heads: dict[str, torch.Tensor] = {}
        """Zero-shot head ``[D, len(COLORS)]`` per class name, built on first use."""

    def _autocast(self):
        # clip_benchmark runs under torch.cuda.amp.autocast (amp=True); there is no CPU counterpart.
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return nullcontext()

    @torch.no_grad()
    def head(self, classname: str) -> torch.Tensor:
        if classname not in self.heads:
            texts = [text for color in COLORS for text in color_texts(classname, color)]
            with self._autocast():
                embeddings = F.normalize(self.encoder.encode_text(texts), dim=-1)
                per_color = embeddings.view(len(COLORS), len(COLOR_TEMPLATES), -1).mean(dim=1)
                self.heads[classname] = F.normalize(per_color, dim=-1).T
        return self.heads[classname]

    @torch.no_grad()
    def logits(self, image: np.ndarray, detections: list[Detection], classname: str) -> torch.Tensor:
        """``[len(detections), len(COLORS)]`` colour logits, all crops in one forward."""
        pil = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
        pixels = torch.stack([self.encoder.preprocess(object_crop(pil, d, self.bgcolor, self.crop))
                              for d in detections])
        head = self.head(classname)
        with self._autocast():
            features = F.normalize(self.encoder.encode_image(pixels.to(self.device)), dim=-1)
            logits = LOGIT_SCALE * features @ head
        return logits.float().cpu()

    def classify(self, image: np.ndarray, detections: list[Detection], classname: str) -> list[str]:
        if not detections:
            return []
        return [COLORS[i] for i in self.logits(image, detections, classname).argmax(dim=1).tolist()]
