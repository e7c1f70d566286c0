#!/usr/bin/env bash
# Install the optional mmdet GenEval backend (geneval.detector=mmdet) into the CURRENT virtual
# environment, as GenEval ran it (default) or the mmdet 3.3 alternative (MMDET=3):
#   MMDET=2 (default): requirements-mmdet.txt  - torch 2.0.1, mmdet 2.27.0, mmcv-full 1.7.1 from source,
#                                                open-clip-torch 2.20.0 (GenEval's pins);
#   MMDET=3:           requirements-mmdet3.txt - torch 2.14.1, mmdet 3.3.0, mmcv 2.1.0 from source.
#
# Usage (from the repository root, in a fresh venv: this extra needs another torch than the core):
#     python3 -m venv .venv-mmdet && . .venv-mmdet/bin/activate
#     nice -n 10 bash scripts/install_mmdet.sh
#
# Why mmcv is built here:
# - neither mmcv-full 1.7.1 nor mmcv 2.1.0 has a wheel on PyPI for these torch/python versions, and
#   mmcv-lite lacks mmcv._ext, which mmdet's models need;
# - a plain `pip install mmcv...` builds in an isolated environment that has no torch and a
#   setuptools without pkg_resources, so the build runs without isolation after installing
#   torch and setuptools<81 here.
# The build compiles ~72-77 C++ units: ~11 minutes on 2 idle cores, much longer on busy ones
# (MAX_JOBS, default: all cores). CUDA ops are compiled when torch sees a GPU, or with
# FORCE_CUDA=1 (needs nvcc matching torch's CUDA); without them Mask2Former cannot run on a GPU.
#
# Environment: PYTHON (default: python), MMDET (2 or 3), MAX_JOBS, FORCE_CUDA,
# MMCV_BUILD_DIR (default: a temp dir).
set -euo pipefail

PYTHON="${PYTHON:-python}"
MMDET="${MMDET:-2}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MAX_JOBS="${MAX_JOBS:-$(nproc)}"
BUILD_DIR="${MMCV_BUILD_DIR:-$(mktemp -d)}"

case "$MMDET" in
    2) REQUIREMENTS="$REPO/requirements-mmdet.txt"; MMCV_PACKAGE=mmcv-full; MMCV_VERSION=1.7.1 ;;
    3) REQUIREMENTS="$REPO/requirements-mmdet3.txt"; MMCV_PACKAGE=mmcv; MMCV_VERSION=2.1.0 ;;
    *) echo "error: MMDET must be 2 (GenEval's mmdet 2.x) or 3 (mmdet 3.3), got '$MMDET'" >&2; exit 1 ;;
esac

if ! "$PYTHON" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
    echo "error: $PYTHON is not inside a virtual environment; create and activate one first (see the header)" >&2
    exit 1
fi

echo "== build tools and the mmdet extra's packages ($(basename "$REQUIREMENTS"))"
"$PYTHON" -m pip install -U pip
"$PYTHON" -m pip install "setuptools>=65,<81" wheel ninja packaging pyyaml
"$PYTHON" -m pip install -r "$REQUIREMENTS"

echo "== $MMCV_PACKAGE $MMCV_VERSION from source in $BUILD_DIR (MAX_JOBS=$MAX_JOBS)"
"$PYTHON" -m pip download --no-deps --no-binary :all: --no-build-isolation "$MMCV_PACKAGE==$MMCV_VERSION" -d "$BUILD_DIR"
tar xzf "$BUILD_DIR/$MMCV_PACKAGE-$MMCV_VERSION.tar.gz" -C "$BUILD_DIR"
(cd "$BUILD_DIR/$MMCV_PACKAGE-$MMCV_VERSION" &&
    MMCV_WITH_OPS=1 MAX_JOBS="$MAX_JOBS" "$PYTHON" -m pip wheel --no-build-isolation --no-deps -w "$BUILD_DIR/wheels" .)
"$PYTHON" -m pip install --no-deps "$BUILD_DIR"/wheels/"${MMCV_PACKAGE//-/_}"-"$MMCV_VERSION"-*.whl

if [ -f "$REPO/pyproject.toml" ]; then
    # --no-deps: the project's core pin torch==2.13.0 would replace this extra's torch.
    "$PYTHON" -m pip install --no-deps -e "$REPO"
fi

echo "== check"
"$PYTHON" - <<'PY'
import mmcv, mmcv.ops, mmdet, mmdet.models, open_clip, torch, torchvision
from geneval.detectors.mmdet import config_path
print(f"torch {torch.__version__} (cuda: {torch.cuda.is_available()}), torchvision {torchvision.__version__}, "
      f"mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, open_clip {open_clip.__version__}")
print("config:", config_path())
PY
"$PYTHON" -m pip check

if [ "$MMDET" = 2 ]; then
    URL=https://download.openmmlab.com/mmdetection/v2.0/mask2former/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth
else
    URL=https://download.openmmlab.com/mmdetection/v3.0/mask2former/mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco/mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco_20220504_001756-c9d0c4f2.pth
fi
cat <<MSG
Done. Weights are not downloaded by the evaluator; fetch them once on a machine with internet access:
    wget $URL
    hf download timm/vit_large_patch14_clip_224.openai
then run GenEval with geneval.detector=mmdet geneval.detector_path=/path/to/that.pth
and test with: $PYTHON -m pytest -q tests/test_detectors_mmdet.py
MSG
