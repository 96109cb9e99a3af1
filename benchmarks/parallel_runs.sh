#!/usr/bin/env bash
# Run the `encdec train` commands that `encdec study ... --print-commands` prints (one per line on
# stdin), P at a time on this machine, each with EXTRA arguments appended; each run's output is
# appended to <its --out folder>/train.log (a resumed run keeps its earlier lines), and one line
# per finished run goes to stdout. On a CPU give each run its share of the cores, e.g. two runs on
# two cores: `... --print-commands | OMP_NUM_THREADS=1 bash benchmarks/parallel_runs.sh 2` (stop
# them with `pkill -TERM -f "encdec train"`: each run saves a checkpoint, no further run starts,
# and the same pipeline later resumes what is left).
# Small models leave a GPU mostly idle, so several runs share one. The GPU rows of
# docs/findings.md §6 were made by this same xargs loop (inline in the GPU job; this file was
# extracted from it afterwards), 15 at a time on one H100 (9 for the pre-norm heads runs):
#
#   encdec study heads --values 16 --set model.d_head=64 --seeds 3 --steps 1000 \
#       --out runs/gpu/study-heads-dk64 --print-commands \
#     | bash benchmarks/parallel_runs.sh 15 --device cuda --precision fp32
#
# then the same study command with --collect in place of --print-commands writes the tables.
# Exits non-zero when any run failed (its train.log says why).
set -euo pipefail
if [[ $# -lt 1 || ! $1 =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: encdec study ... --print-commands | $0 P [EXTRA ARGS...]   (P: runs at a time)" >&2
    exit 2
fi
P=$1
shift
export EXTRA="$*"
cmds=$(grep -E '^encdec train --out ' || true)
if [[ -z $cmds ]]; then
    echo "no 'encdec train --out ...' lines on stdin (every run of the study finished?)" >&2
    exit 1
fi
printf '%s\n' "$cmds" | xargs -d '\n' -P "$P" -n 1 bash -c '
    read -ra cmd <<< "$0"
    out=${cmd[3]}
    mkdir -p "$out"
    rc=0
    "${cmd[@]}" $EXTRA >> "$out/train.log" 2>&1 || rc=$?
    echo "$(date +%T) rc=$rc $out"
    if [[ $rc -eq 130 ]]; then exit 255; fi  # interrupted, checkpoint saved: xargs starts no further run
    exit $rc'
