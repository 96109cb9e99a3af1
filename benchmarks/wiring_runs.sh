#!/usr/bin/env bash
# Train the small preset once per cross-attention wiring scheme on bible:es-en, at an
# equal step budget (the 1,385 steps the 30-minute main job reached), then score test
# BLEU with beam 4. Sequential: each run wants both cores. Resumable: rerun to continue.
#   bash benchmarks/wiring_runs.sh [STEPS] [SCHEMES...]
set -euo pipefail
steps=${1:-1385}
shift || true
schemes=("${@:-final layerwise mix dense}")
encdec=${ENCDEC:-.venv/bin/encdec}
for scheme in ${schemes[*]}; do
  "$encdec" train --out "runs/wiring-$scheme" --steps "$steps" --set "model.wiring=$scheme"
done
