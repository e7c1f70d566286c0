"""Convert mmdetection's Mask2Former checkpoint (GenEval's detector) for the ``hf`` backend.

    wget https://download.openmmlab.com/mmdetection/v2.0/mask2former/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth
    python scripts/convert_mmdet_mask2former.py mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth

Without OUT_DIR the folder goes where ``geneval.detector_path=auto`` looks for it
(``$GENEVAL_WEIGHTS`` or ``~/.cache/geneval``, ``<name>-hf``). Either release converts (the
mmdet 2.x file GenEval downloads, or mmdet 3.x's ``..._8xb2-lsj-50e_coco_..._c9d0c4f2.pth``);
the SHA-256 says whether it is GenEval's, and ``conversion.json`` in the folder records it.
Needs only the core requirements (no mmcv). See geneval/detectors/mmdet_convert.py.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from geneval.detectors.mmdet_convert import convert_checkpoint, official_folder  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="mmdet Mask2Former .pth")
    parser.add_argument("out_dir", nargs="?", help=f"output folder (default: {official_folder()})")
    parser.add_argument("--num-attention-heads", type=int, default=8,
                        help="decoder/pixel-decoder heads; not visible in the tensors (8 in every mmdet config)")
    args = parser.parse_args(argv)
    out_dir = args.out_dir or official_folder()
    os.makedirs(os.path.dirname(os.path.abspath(out_dir)), exist_ok=True)
    provenance = convert_checkpoint(args.checkpoint, out_dir, num_attention_heads=args.num_attention_heads)
    print(f"converted {provenance.describe()} -> {out_dir}")
    if not provenance.official:
        print("WARNING: this is not GenEval's detector checkpoint; scores with it are GenEval-style, not official",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
