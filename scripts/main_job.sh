#!/usr/bin/env bash
# The main job (`make run`): preset `small` with dense cross-attention wiring, 30 minutes of
# training on bible:es-en, then test BLEU (beam 4). Its regularisation and batch size follow how
# many steps a half hour holds on this machine, as measured (README "Main job"). Both train in
# 2,000-token batches (more, smaller updates: +1.72 test BLEU over 3,000-token batches on the AVX2
# AMD in fp32, +0.49 on a slow AVX512_BF16 AMD in bf16, each the same day, back to back):
#   - bf16 autocast on a CPU (AVX512_BF16/AMX) or a GPU: 2,600-4,700 steps of 3,000 tokens, 8-14
#     epochs, which overfit without dropout: dropout 0.1 (36.44 test BLEU against 32.02 with
#     dropout 0 in 3,000-token batches on a fast AVX512_BF16 AMD, 2026-12-01; 34.46 with
#     2,000-token batches against 33.97 with 3,000 on a host half as fast, 2026-12-06);
#   - fp32 on a CPU without native bf16: ~1,400-2,200 steps, 4 epochs, update-bound: dropout 0
#     (+1.04 test BLEU over 0.1 the same day): 32.23 and 32.29 (two runs), 31.34 at the slowest
#     recorded day's budget, where the bf16 machine's recipe scored 28.66 (2 cores of an AMD EPYC
#     with AVX2 only, 2026-12-04 and 2026-12-06).
# The choice is encdec's own `--precision auto` (ENCDEC_FORCE_PRECISION=bf16|fp32 overrides it).
#
#   bash scripts/main_job.sh            # train (rerunning resumes runs/main)
#   bash scripts/main_job.sh --print    # print the command it would run, and why
# Other arguments are passed on to `encdec train` after the recipe's.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
ENCDEC=${ENCDEC:-.venv/bin/encdec}
if ! command -v "$PYTHON" > /dev/null; then
  echo "error: $PYTHON not found: run \`make setup\` first (or set PYTHON and ENCDEC)" >&2; exit 1
fi

print=0
if [[ "${1:-}" == "--print" ]]; then print=1; shift; fi

fast=$("$PYTHON" -c 'from encdec.runtime import Runtime
r = Runtime.create()
print(int(r.device.type == "cuda" or r.amp_dtype is not None))')
if [[ "$fast" == 1 ]]; then
  recipe=(--set model.dropout=0.1 --set train.max_tokens=2000)
  why="this machine trains in bf16 or on a GPU (8-14 epochs or more in 30 minutes): dropout 0.1, 2,000-token batches"
else
  recipe=(--set train.max_tokens=2000)
  why="this CPU trains in fp32 (~4 epochs in 30 minutes): dropout 0, 2,000-token batches"
fi
cmd=("$ENCDEC" train --out runs/main --minutes 30 --set model.wiring=dense "${recipe[@]}" "$@")

echo "main job: $why (README \"Main job\")" >&2
if (( print )); then
  printf '%q ' "${cmd[@]}"; echo
else
  exec "${cmd[@]}"
fi
