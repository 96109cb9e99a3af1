#!/usr/bin/env bash
# Train the lab's missing converged runs (docs/findings.md section 8) in the order their answers
# matter, P at a time (default 1, on all the cores), resuming whatever a stopped machine or session
# left in RUNS (default ~/encdec-runs):
#   bash scripts/converged_queue.sh            # run the queue
#   bash scripts/converged_queue.sh 2          # two runs at a time, each on its share of the cores
#   bash scripts/converged_queue.sh --print    # list what is left to train, run nothing
# One run on both cores (4,100 tok/s) trains about as fast as two on one core each (2 x 2,160) on
# the 2-core AMD EPYC with AVX512_BF16 in bf16 (findings section 8), but finishes in half the
# hours: a converged run takes ~2 hours that way, within one session, while two side by side take
# ~4 each and are lost with their checkpoints when the next session comes on a new machine (as on
# 2026-12-07 evening).
# 1. the regularisation and schedule arms of section 0 (dropout 0.2, 0.3, the plateau schedule;
#    seed 1, paired with `final` seed 1), the ceiling: dropout 0.2 for the same 15,000 steps
#    with the LR decayed linearly to zero (paired with the inverse-square-root dropout 0.2 run),
#    then dropout 0.4 (0.3, the sweep's top arm, won); heads=8 with d_k 64 (first of these:
#    it answers a claim of the seed, whether small d_k is what costs many heads), then `final`
#    seed 1 under pre-LN (second: the norm control of the pre-LN depth study);
# 2. heads 1 and 8 (heads=4 is `final` of the wiring study: its archived runs are copied in);
# 3. depth with pre-LN: 2, 6, 1-6, 6-1;
# 4. the wiring study grows beside its archived runs: layerwise, mix, dense@0+3, final+sf0.2.
# Heads and depth go before the rest of wiring: wiring's main question (final vs dense) has its
# three converged seeds, heads and depth have none. The studies' runs go seed by seed: every
# point's seed 1 (in the order above) before any seed 2, so that each claim gets its first
# converged reading as early as the machine allows; the standalone arms (1., which refine a ceiling
# already measured) then alternate with the later seeds, so that with P=2 they never hold both cores.
# A run another process is training fails at once with "being trained by another process" and
# the queue goes on; a finished run (its eval.test.beam4.json exists, in RUNS or docs/runs) is left out. Stop it with
# `pkill -TERM -f "encdec train --out $RUNS"`: each run saves a checkpoint; rerun to resume.
# Archive each finished run's small results with scripts/archive_study.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
P=1
PRINT=0
for arg in "$@"; do
    case $arg in
        --print) PRINT=1 ;;
        [1-9]|[1-9][0-9]) P=$arg ;;
        *) echo "usage: $0 [P] [--print]   (P: runs at a time, default 1)" >&2; exit 2 ;;
    esac
done
[[ -x .venv/bin/encdec ]] && export PATH="$PWD/.venv/bin:$PATH"
command -v encdec > /dev/null || { echo "encdec is not installed: run scripts/setup.sh first" >&2; exit 1; }
RUNS=${RUNS:-$HOME/encdec-runs}
R="--until-converged --set model.dropout=0.1 --set train.average_last=5 --set train.dev_bleu_sentences=1534"

mkdir -p "$RUNS"
# a study archived under docs/study/ by an earlier machine starts from its finished runs
for s in converged-wiring converged-heads converged-depth; do
    [[ -d $RUNS/$s || ! -d docs/study/$s ]] || cp -r "docs/study/$s" "$RUNS/$s"
done
for k in 1 2 3; do
    h4=$RUNS/converged-heads/heads=4/seed-$k
    [[ -d $h4 ]] || { mkdir -p "$(dirname "$h4")"; cp -r "docs/study/converged-wiring/wiring=final/seed-$k" "$h4"; }
done

# a standalone run's line, unless it finished (here, or archived under docs/runs/ by an earlier machine)
single() {
    local out=$RUNS/$1
    [[ -f $out/eval.test.beam4.json || -f docs/runs/$1/eval.test.beam4.json ]] && return 0
    shift
    echo "encdec train --out $out $*"
}
queue=$(
    # heads: does h=8 lose at convergence by its head count or by its d_k of 32? The same run with
    # d_k = 64 (9.94M parameters) pairs with heads=8 (d_k 32) and heads=4 (d_k 64) seed 1
    single converged-heads-dk/heads=8-dhead-64 \
        --config docs/study/converged-heads/heads=8/seed-1/config.json --set model.d_head=64
    # norm: `final` seed 1 (post-LN 3+3) again under pre-LN, the depth study's norm; it separates norm
    # from depth when the pre-LN depths are set beside the post-LN wiring runs, and it is the pre-LN
    # `final` a pre-LN dense@0+3 would be paired with
    single converged-norm/final-pre-ln \
        --config docs/study/converged-wiring/wiring=final/seed-1/config.json --set model.norm=pre
    for d in 0.2 0.3; do
        single converged-dropout/final-dropout-$d --until-converged --set model.dropout=$d \
            --set train.average_last=5 --set train.dev_bleu_sentences=1534
    done
    single converged-schedule/final-plateau-seed1 $R --set train.schedule=plateau --set train.seed=1
    single converged-ceiling/final-dropout-0.2-linear15k --steps 15000 --set model.dropout=0.2 \
        --set train.average_last=5 --set train.dev_bleu_sentences=1534
    # the sweep's top arm (0.3) won: 0.4 brackets it
    single converged-dropout/final-dropout-0.4 --until-converged --set model.dropout=0.4 \
        --set train.average_last=5 --set train.dev_bleu_sentences=1534
    # shellcheck disable=SC2086  # $R holds several arguments
    encdec study heads --values 1,4,8 --reference heads=8 --seeds 3 $R \
        --out "$RUNS/converged-heads" --print-commands
    # shellcheck disable=SC2086
    encdec study depth --values 2,6,1-6,6-1 --reference depth=6 --set model.norm=pre --seeds 2 $R \
        --out "$RUNS/converged-depth" --print-commands
    # shellcheck disable=SC2086
    encdec study wiring --values final,dense,layerwise,mix,dense@0+3,final+sf0.2 --seeds 3 $R \
        --out "$RUNS/converged-wiring" --print-commands
)
# the studies' runs seed by seed (a stable sort on the seed of the run folder, --out's seed-K; a
# standalone run has none, whatever its --config names): every seed 1 first,
# then the standalone arms interleaved with the later seeds: standalone, study, standalone, study...
# so that with P=2 one core trains the recipe arms while the other goes on with the studies
queue=$(printf '%s\n' "$queue" |
    awk 'NF { s = 0; if (match($0, /--out [^ ]*\/seed-[0-9]+/)) { s = substr($0, RSTART, RLENGTH); sub(/.*\/seed-/, "", s) }
              print s "\t" $0 }' |
    sort -s -n -k1,1 |
    awk -F'\t' '$1 == 1 { print $2; next } $1 == 0 { a[++n] = $2; next } { b[++m] = $2 }
                END { for (i = 1; i <= n || i <= m; i++) { if (i <= n) print a[i]; if (i <= m) print b[i] } }')
if [[ $PRINT == 1 ]]; then
    printf '%s\n' "$queue"
    exit 0
fi
# each run its share of the cores
threads=$(( $(nproc) / P ))
printf '%s\n' "$queue" | OMP_NUM_THREADS=$(( threads > 0 ? threads : 1 )) bash benchmarks/parallel_runs.sh "$P"
