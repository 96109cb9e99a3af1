"""Data-parallel training: sharding covers each batch once per epoch; 2 gloo ranks == 1 process with accum 2."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from encdec.cli import app
from encdec.data.batching import epoch_order
from encdec.distributed import Dist, shard
from encdec.train import TrainState, next_batches

from conftest import CACHE

runner = CliRunner()


@pytest.mark.parametrize(("world", "accum"), [(1, 1), (2, 1), (2, 2), (3, 1)])
def test_every_batch_once_per_epoch(world, accum):
    n = 11
    state, order = TrainState(), epoch_order(n, seed=5, epoch=0)
    seen: dict[int, list[int]] = {}  # epoch -> batch indices taken by all ranks
    while state.epoch < 3:
        epoch = state.epoch
        pos = state.pos
        step, order = next_batches(state, order, world * accum, seed=5)
        per_rank = [shard(step, Dist(r, world)) for r in range(world)]
        assert sorted(sum(per_rank, [])) == sorted(step) and all(len(p) == accum for p in per_rank)
        for i, b in enumerate(step):  # a step may run across the end of an epoch
            seen.setdefault(epoch + (pos + i) // n, []).append(b)
    for epoch in (0, 1):
        assert seen[epoch] == epoch_order(n, seed=5, epoch=epoch)  # each batch once, in the epoch's order


# exactness tests: fp32 pinned (under bf16 autocast, the summation order of DDP vs accumulation
# shows in the losses; tests/test_bf16.py checks that path with bf16 tolerances)
ARGS = ["--data", "synthetic:copy", "--preset", "tiny", "--no-evaluate", "--precision", "fp32",
        "--set", "train.max_tokens=256",
        "--set", "train.log_every=1", "--set", "train.eval_every=1000", "--set", "train.warmup_steps=2",
        "--set", "train.dev_bleu_sentences=0"]


def _losses(run):
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "loss" in r}


def _torchrun(out, steps, cache, *extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "encdec",
           "train", "--out", str(out), "--steps", str(steps), *ARGS, "--set", f"data.cache_dir={cache}", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]


def test_two_gloo_ranks_equal_one_process_with_accum_2(tmp_path):
    cache = CACHE
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "one"), "--steps", "6", *ARGS, "--accum", "2",
                            "--set", f"data.cache_dir={cache}"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    _torchrun(tmp_path / "two", 6, cache)
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(two) == list(range(1, 7))  # rank 0 alone writes the metrics
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5, abs=1e-6)
    assert one[6] < one[1]


def test_a_two_rank_checkpoint_resumes_in_one_process(tmp_path):
    cache = CACHE
    sched = ["--set", "train.schedule=inverse_sqrt"]  # LR by step alone, so a longer budget changes nothing before
    _torchrun(tmp_path / "run", 3, cache, *sched)
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "run"), "--steps", "6", *ARGS, "--accum", "2", *sched,
                            "--set", f"data.cache_dir={cache}"], catch_exceptions=False)
    assert r.exit_code == 0 and "resumed" in r.output, r.output
    straight = tmp_path / "straight"
    r = runner.invoke(app, ["train", "--out", str(straight), "--steps", "6", *ARGS, "--accum", "2", *sched,
                            "--set", f"data.cache_dir={cache}"], catch_exceptions=False)
    assert r.exit_code == 0
    resumed, reference = _losses(tmp_path / "run"), _losses(straight)
    for step in (4, 5, 6):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-5, abs=1e-6)
