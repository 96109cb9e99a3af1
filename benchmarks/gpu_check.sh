#!/usr/bin/env bash
# The prepared GPU check of the bf16 slowdown (benchmarks/gpu_check.py), sized for one device
# session (<= 8 minutes on an H100-class GPU): writes its table, JSON and profiles to $OUT (the
# device tool's output folder) or ./gpu-check.
#   device:  bash benchmarks/gpu_check.sh
#   dry run: bash benchmarks/gpu_check.sh --device cpu --steps 4 --presets tiny
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
[ -x "$py" ] || py=python3
out=${OUT:-gpu-check}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # the device image has no .venv with encdec installed
mkdir -p "$out"
timeout 480 "$py" benchmarks/gpu_check.py --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
