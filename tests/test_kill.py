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


def test_a_second_trainer_of_a_busy_run_folder_is_refused(tmp_path):
    """Two processes training one folder would resume from the same checkpoint and write every log
    record twice (it happened: a study and a scheduler's line on the same run). The second is
    refused with the holder's pid, and a killed holder frees the folder at once."""
    from encdec.checkpoint import is_busy, run_lock

    run = tmp_path / "run"
    hold = ("import sys, time\nfrom pathlib import Path\nfrom encdec.checkpoint import run_lock\n"
            "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(run)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert is_busy(run)
        second = subprocess.run(command(run, CACHE), capture_output=True, text=True, env=ENV, timeout=120)
        text = " ".join(second.stderr.split())
        assert second.returncode == 2 and "Traceback" not in text, second.stderr
        assert f"is being trained by another process (pid {holder.pid})" in text
        assert not (run / "metrics.jsonl").exists() and not (run / "checkpoint").exists()  # it touched nothing
    finally:
        holder.kill()
        holder.wait()
    assert not is_busy(run)  # the kernel dropped the killed holder's lock
    with run_lock(run):
        assert is_busy(run)  # held in this process: another open of the folder is refused too
    assert not is_busy(run)
