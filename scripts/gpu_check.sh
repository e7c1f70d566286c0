#!/usr/bin/env bash
# One short GPU check (about 4 minutes on an H100/H200): real-size Show-o 1.3B, Janus-Pro-1B and
# LlamaGen-XL 775M (+ flan-t5-xl encoder) with random weights in bf16, N=20 candidates with guidance;
# prints images/s, ms per decoding step, MFU against the card's dense bf16 peak and peak memory
# (bench/gpu_check.py). One backend: bash scripts/gpu_check.sh --backends llamagen (about 1 minute).
set -euo pipefail
cd "$(dirname "$0")/.."
${PYTHON:-.venv/bin/python} -m bench.gpu_check "$@"
