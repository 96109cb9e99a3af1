"""kill -9 at any moment, then the same command: the same losses as an uninterrupted run, and
every step exactly once in metrics.jsonl."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import CACHE

pytestmark = pytest.mark.slow


def command(out, cache):
    return [sys.executable, "-m", "encdec", "train", "--data", "synthetic:copy", "--preset", "tiny", "--steps", "24",
            "--out", str(out), "--no-evaluate", "--precision", "fp32", "--set", f"data.cache_dir={cache}",
            "--set", "train.max_tokens=256", "--set", "train.log_every=1", "--set", "train.eval_every=12",
            "--set", "train.dev_bleu_sentences=0"]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def records(run) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]  # a line being written is skipped


def kill_when(cmd, ready, env=ENV, timeout=120) -> None:
    """Start `cmd`, SIGKILL it as soon as `ready()` holds; the process must not end by itself first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        assert time.time() < deadline, "timed out waiting to kill the run"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def test_kills_before_the_first_checkpoint_during_a_checkpoint_write_and_mid_run(tmp_path):
    cache = CACHE
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(command(straight, cache), check=True, capture_output=True, env=ENV, timeout=300)
    cmd = command(killed, cache)

    # 1. before the first checkpoint (step 12): a stale log of a run with nothing to resume
    kill_when(cmd, lambda: any(r.get("step", 0) >= 2 for r in records(killed)))
    assert not (killed / "checkpoint").exists() and records(killed)

    # 2. during the checkpoint write, between its two renames (no checkpoint/ folder at that moment)
    flag = tmp_path / "paused"
    kill_when(cmd, flag.exists, env={**ENV, "ENCDEC_TEST_CHECKPOINT_PAUSE": str(flag)})
    assert not (killed / "checkpoint").exists() and (killed / "checkpoint.tmp" / "complete").exists()

    # 3. mid-run, past the checkpoint, so the log holds steps the resumed run repeats
    kill_when(cmd, lambda: any(r.get("step", 0) >= 15 and "loss" in r for r in records(killed)))

    subprocess.run(cmd, check=True, capture_output=True, env=ENV, timeout=300)
    got, want = records(killed), records(straight)
    steps = [r["step"] for r in got if "loss" in r]
    assert steps == list(range(1, 25))  # every step exactly once, in order
    assert [r["step"] for r in got if "dev_nll" in r] == [12, 24]
    assert sum("final" in r for r in got) == 1
    assert [r["loss"] for r in got if "loss" in r] == [r["loss"] for r in want if "loss" in r]
    assert [r["dev_nll"] for r in got if "dev_nll" in r] == [r["dev_nll"] for r in want if "dev_nll" in r]
