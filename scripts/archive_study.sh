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
# Refuse a destination that holds another study: runs the source lacks, or a study.json with
# another base config or with grid points the source does not have (a study that grew is fine).
if [ -d "$2" ]; then
    foreign=$(comm -13 <(cd "$1" && find . -name metrics.jsonl -printf '%h\n' | sort) \
                       <(cd "$2" && find . -name metrics.jsonl -printf '%h\n' | sort) | head -5 | tr '\n' ' ')
    if [ -z "$foreign" ] && [ -f "$1/study.json" ] && [ -f "$2/study.json" ]; then
        foreign=$(python3 - "$1/study.json" "$2/study.json" <<'PY'
import json, sys
src, dest = (json.load(open(p)) for p in sys.argv[1:])
grid = {name: set(values) for name, values in src["axes"]}
flat = lambda d, pre="": {k: v for key, val in d.items()  # noqa: E731
                          for k, v in (flat(val, f"{pre}{key}.").items() if isinstance(val, dict) else [(pre + key, val)])}
a, b = flat(src["base"]), flat(dest["base"])
if any(a[k] != b[k] for k in a.keys() & b.keys()):  # fields added to the config since are not a difference
    print("a study with another base config")
elif any(not set(values) <= grid.get(name, set()) for name, values in dest["axes"]):
    print("a study of " + ", ".join(f"{name}={','.join(values)}" for name, values in dest["axes"]))
PY
)
    fi
    if [ -n "$foreign" ]; then
        echo "$2 already holds another study's results ($foreign); archive into a new folder" >&2
        exit 1
    fi
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
