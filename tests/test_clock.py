"""The loop's clock leaves out the time the process was stopped (SIGSTOP, Ctrl-Z, suspend), so a
paused run's `elapsed`, `--minutes` budget and `train_min` count only the time it ran."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from encdec.clock import ActiveClock

from conftest import CACHE


class FakeSource:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_a_gap_longer_than_beat_plus_slack_is_booked_as_paused():
    src = FakeSource()
    clock = ActiveClock(beat=1.0, slack=4.0, source=src, heartbeat=False)
    start = clock()
    for _ in range(10):  # the heartbeat's regular wake-ups: nothing paused
        src.t += 1.0
        clock.tick()
    assert clock() - start == 10.0 and clock.paused == 0.0
    src.t += 5.0  # a late wake-up within beat + slack: still counted as running
    assert clock() - start == 15.0 and clock.paused == 0.0
    src.t += 60.0  # stopped for a minute: only the heartbeat's own beat counts
    assert clock() - start == 16.0 and clock.paused == 59.0
    src.t += 0.5
    assert clock() - start == 16.5


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="beat must be > 0"):
        ActiveClock(beat=0.0, heartbeat=False)


@pytest.mark.slow
def test_a_run_stopped_with_sigstop_does_not_count_the_stop(tmp_path):
    """A real training process, stopped for 8 s mid-run: no jump in its logged `elapsed`, its
    train_min stays below the stop, and it says what it left out."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "encdec", "train", "--data", "synthetic:copy", "--preset", "tiny", "--steps", "150",
           "--out", str(run), "--no-evaluate", "--precision", "fp32", "--set", f"data.cache_dir={CACHE}",
           "--set", "train.max_tokens=256", "--set", "train.log_every=1", "--set", "train.eval_every=1000",
           "--set", "train.dev_bleu_sentences=0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics, deadline = run / "metrics.jsonl", time.time() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 5):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.01)
    proc.send_signal(signal.SIGSTOP)
    time.sleep(8.0)
    proc.send_signal(signal.SIGCONT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 150
    gaps = [b["elapsed"] - a["elapsed"] for a, b in zip(steps, steps[1:])]
    assert max(gaps) < 3.0, max(gaps)  # the 8 s stop does not show
    final = next(r["final"] for r in records if "final" in r)
    wall = time.time() - (deadline - 120)
    assert final["total_min"] * 60 < wall - 6.0
    assert "left out 0.1 minutes during which this process was stopped" in " ".join(out.split())
