#!/usr/bin/env bash
# One short GPU check (about 3 minutes on an H100/H200): real-size Show-o 1.3B and Janus-Pro-1B with
# random weights in bf16, N=20 candidates with guidance; prints images/s, ms per decoding step, MFU
# against the card's dense bf16 peak and peak memory (bench/gpu_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."
${PYTHON:-.venv/bin/python} -m bench.gpu_check "$@"
