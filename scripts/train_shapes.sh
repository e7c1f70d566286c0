#!/usr/bin/env bash
# Reproduce the shipped shapes-world weights (weights/shapes/) from scratch, on CPU.
#   bash scripts/train_shapes.sh
# 1. the prompt suites (evaluation prompts held out of the training pool),
# 2. the k-means patch tokenizer (about 1 minute),
# 3. the generator, both decoding orders in one model (about 70 minutes on 2 cores).
# Every step is seeded; the generator resumes from its last checkpoint if killed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
$PY -m geneval.suites --vocab shapes
$PY -m training.train_tokenizer --out weights/shapes/tokenizer
$PY -m training.train_generator --out weights/shapes/generator "$@"
