#!/usr/bin/env bash
# The one-call device check behind the README's GPU figures: the GPU check of the real backends, then
# the batched-vs-upstream-loop search bench of the shapes world on the GPU, both decoding orders.
#   bash scripts/gpu_device_run.sh 2>&1 | tee docs/gpu_check_<card>.txt
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
# A bare GPU image may lack omegaconf (pure Python): put a copy on PYTHONPATH, e.g. .devdeps/omegaconf.
[ -d .devdeps ] && export PYTHONPATH=$PWD/.devdeps${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
$PY -m bench.gpu_check
for config in configs/shapes.yaml configs/shapes_raster.yaml; do
  $PY -m bench.search --config $config --device cuda --prompts 12 --num-candidates 20 --speed-only "$@"
done
