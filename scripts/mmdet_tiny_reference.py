"""Record mmdetection's own detections of the tiny Mask2Former (tests/mmdet_tiny.py) as a reference.

Runs only inside the mmdet environment (``scripts/install_mmdet.sh``), never in CI:

    /path/to/mmdet-venv/bin/python scripts/mmdet_tiny_reference.py [tests/data/mmdet_tiny_reference.json]

It builds ``TINY_MMDET2_MODEL`` with mmdet's own classes, loads ``tiny_state_dict()`` strictly
(so the hand-written mmdet names in tests/mmdet_tiny.py are exactly mmdet's), runs GenEval's
test pipeline (``inference_detector`` on the BGR array, as evaluate_images.py does on files) and
writes every detection (label, score, mask box, mask area) plus a hash of the uint8 image after
``Resize`` and ``Pad``. tests/test_mmdet_convert.py compares the converted transformers model,
run by the ``hf`` backend without mmcv, against this file.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT_OUT = os.path.join("tests", "data", "mmdet_tiny_reference.json")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    try:
        import torchvision  # noqa: F401
    except ImportError:
        # mmcv 1.x's runner imports torchvision at import time (only for torchvision:// checkpoints, never
        # used here); PyPI has no torchvision for torch 1.13 on Python 3.11, where this file was made.
        sys.modules["torchvision"] = types.ModuleType("torchvision")
        print("note: torchvision is not installed; an empty stand-in module satisfies mmcv's import")
    import mmcv
    import mmdet
    import numpy as np
    import torch
    from mmcv import Config
    from mmdet.apis import inference_detector
    from mmdet.datasets.pipelines import Compose
    from mmdet.models import build_detector

    from tests.mmdet_tiny import TEST_PIPELINE, TINY_MMDET2_MODEL, tiny_image, tiny_state_dict

    if not mmdet.__version__.startswith("2."):
        raise SystemExit(f"needs mmdet 2.x (GenEval's), found {mmdet.__version__}")
    cfg = Config(dict(model=TINY_MMDET2_MODEL, data=dict(test=dict(pipeline=TEST_PIPELINE))))
    model = build_detector(cfg.model)
    model.load_state_dict(tiny_state_dict(), strict=True)
    model.cfg = cfg
    model.eval()

    rgb = tiny_image()
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    # The uint8 image after Resize and Pad (before Normalize), to pin the preprocessing exactly.
    steps = TEST_PIPELINE[1]["transforms"]
    resize_pad = Compose([TEST_PIPELINE[0], dict(type="Resize", img_scale=(1333, 800), keep_ratio=True), steps[2]])
    padded = resize_pad(dict(img=bgr))
    with torch.no_grad():
        bbox_results, segm_results = inference_detector(model, bgr)
    detections = []
    for label, (boxes, masks) in enumerate(zip(bbox_results, segm_results)):
        for row, mask in zip(boxes, masks):
            detections.append(dict(label=label, score=float(row[4]), box=[float(v) for v in row[:4]],
                                   area=int(np.asarray(mask).sum())))
    detections.sort(key=lambda d: -d["score"])
    record = dict(
        versions=dict(torch=torch.__version__, mmcv=mmcv.__version__, mmdet=mmdet.__version__,
                      torchvision=getattr(sys.modules["torchvision"], "__version__", "absent"),
                      numpy=np.__version__, cv2=__import__("cv2").__version__),
        image_hw=list(rgb.shape[:2]), image_sha1=hashlib.sha1(rgb.tobytes()).hexdigest(),
        resized_hw=list(padded["img_shape"][:2]), padded_hw=list(padded["pad_shape"][:2]),
        padded_bgr_uint8_sha1=hashlib.sha1(np.ascontiguousarray(padded["img"]).tobytes()).hexdigest(),
        detections=detections)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    tmp = f"{args.out}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=0)
        f.write("\n")
    os.replace(tmp, args.out)
    print(f"{len(detections)} detections, top score {detections[0]['score']:.6f} -> {args.out}")


if __name__ == "__main__":
    main()
