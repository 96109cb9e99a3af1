#!/usr/bin/env bash
# Copy the small results of a study (or of one run folder) into the work tree, never weights:
#   scripts/archive_study.sh ~/encdec-runs/converged-wiring docs/study/converged-wiring
# Keeps the study's results.{md,csv,json}, runs.csv, study.json, decode_speed.json, budget_curves.json and plots, and
# for every run its config.json, metrics.jsonl, eval.*.json and hyps.*.txt: what a later session
# needs to rebuild the tables, rerun the significance tests or plot the curves.
set -euo pipefail
if [ $# -ne 2 ] || [ ! -d "$1" ]; then
    echo "usage: $0 STUDY_OR_RUN_DIR DEST_DIR (the source must be a folder)" >&2
    exit 2
fi
mkdir -p "$2"
src=$(cd "$1" && pwd)
dest=$(cd "$2" && pwd)
cd "$src"
n=0
while IFS= read -r -d '' f; do
    mkdir -p "$dest/$(dirname "$f")"
    cp "$f" "$dest/$f"
    n=$((n + 1))
done < <(find . -type f \( -name 'results.md' -o -name 'results.csv' -o -name 'results.json' -o -name 'runs.csv' \
    -o -name 'study.json' -o -name 'decode_speed.json' -o -name 'budget_curves.json' -o -name '*.png' -o -name 'config.json' \
    -o -name 'metrics.jsonl' -o -name 'eval.*.json' -o -name 'hyps.*.txt' \) \
    -not -path './*checkpoint*' -not -path '*/snapshots/*' -not -path '*/tensorboard/*' -print0)
echo "archived $n files of $src into $dest"
