#!/usr/bin/env bash
# The embedded generator's quality (README "Embedded generator quality"): plain sampling vs the
# oracle best-of-20, both decoding orders, held-out and held-in prompts. About 12 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
MASK="--order mask --num-steps 12 --guidance-scale 2.0 --temperature 4.5 --temperature-schedule maskgit"
RASTER="--order raster --guidance-scale 2.0 --temperature 1.0"
for suite in heldout heldin; do
  $PY -m training.measure_generator $MASK --suite $suite --num-candidates 20 --out docs/results/generator_mask_$suite.json
  $PY -m training.measure_generator $RASTER --suite $suite --num-candidates 20 --out docs/results/generator_raster_$suite.json
done
