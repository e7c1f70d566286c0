#!/usr/bin/env bash
# Install the optional mmdet GenEval backend (geneval.detector=mmdet) into the CURRENT virtual
# environment: torch 2.14.1 + torchvision + open_clip, mmengine 0.10.7, mmdet 3.3.0, and
# mmcv 2.1.0 built from source with its C++/CUDA ops.
#
# Usage (from the repository root, in a fresh venv: this extra needs another torch than the core):
#     python3 -m venv .venv-mmdet && . .venv-mmdet/bin/activate
#     bash scripts/install_mmdet.sh
#
# Why mmcv is built here (checked on this project's CPU machine):
# - there is no mmcv 2.1.0 wheel for these torch/python versions, and mmcv-lite 2.2.0 fails
#   mmdet's version check and lacks mmcv._ext, which mmdet.models needs;
# - a plain `pip install mmcv==2.1.0` builds in an isolated environment that has no torch and a
#   setuptools without pkg_resources, so the build runs without isolation after installing
#   torch and setuptools<81 here.
# The build takes ~11 minutes on 2 CPU cores (MAX_JOBS, default: all cores). CUDA ops are
# compiled when torch sees a GPU, or with FORCE_CUDA=1 (needs nvcc matching torch's CUDA);
# without them Mask2Former cannot run on a GPU. Verified with torch 2.13.0 CPU; the build
# against torch 2.14.1 has not been tried yet.
#
# Environment: PYTHON (default: python), MAX_JOBS, FORCE_CUDA, MMCV_BUILD_DIR (default: a temp dir).
set -euo pipefail

PYTHON="${PYTHON:-python}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MAX_JOBS="${MAX_JOBS:-$(nproc)}"
BUILD_DIR="${MMCV_BUILD_DIR:-$(mktemp -d)}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
    echo "error: $PYTHON is not inside a virtual environment; create and activate one first (see the header)" >&2
    exit 1
fi

echo "== build tools and the mmdet extra's packages (requirements-mmdet.txt)"
"$PYTHON" -m pip install -U pip
"$PYTHON" -m pip install "setuptools>=77.0.3,<81" wheel ninja packaging pyyaml
"$PYTHON" -m pip install -r "$REPO/requirements-mmdet.txt"

echo "== mmcv 2.1.0 from source in $BUILD_DIR (MAX_JOBS=$MAX_JOBS)"
"$PYTHON" -m pip download --no-deps --no-binary :all: --no-build-isolation mmcv==2.1.0 -d "$BUILD_DIR"
tar xzf "$BUILD_DIR/mmcv-2.1.0.tar.gz" -C "$BUILD_DIR"
(cd "$BUILD_DIR/mmcv-2.1.0" &&
    MMCV_WITH_OPS=1 MAX_JOBS="$MAX_JOBS" "$PYTHON" -m pip wheel --no-build-isolation --no-deps -w "$BUILD_DIR/wheels" .)
"$PYTHON" -m pip install --no-deps "$BUILD_DIR"/wheels/mmcv-2.1.0-*.whl

if [ -f "$REPO/pyproject.toml" ]; then
    # --no-deps: the project's core pin torch==2.13.0 would replace this extra's torch 2.14.1.
    "$PYTHON" -m pip install --no-deps -e "$REPO"
fi

echo "== check"
"$PYTHON" - <<'EOF'
import mmcv, mmcv.ops, mmdet, mmdet.models, open_clip, torch, torchvision
from geneval.detectors.mmdet import config_path
print(f"torch {torch.__version__} (cuda: {torch.cuda.is_available()}), torchvision {torchvision.__version__}, "
      f"mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, open_clip {open_clip.__version__}")
print("config:", config_path())
EOF
"$PYTHON" -m pip check

cat <<EOF
Done. Weights are not downloaded by the evaluator; fetch them once on a machine with internet access:
    wget https://download.openmmlab.com/mmdetection/v3.0/mask2former/mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco/mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco_20220504_001756-c9d0c4f2.pth
    hf download timm/vit_large_patch14_clip_224.openai
then run GenEval with geneval.detector=mmdet geneval.detector_path=/path/to/that.pth
and test with: $PYTHON -m pytest -q tests/test_detectors_mmdet.py
EOF
