"""The bf16 autocast path of training, resume, DDP and decoding, with tolerances that hold for bf16.

These run where `precision auto` resolves to bf16: on a CPU with native bf16, and everywhere in
the suite's bf16 leg (`ENCDEC_FORCE_PRECISION=bf16 pytest -m bf16`, run by `make test`), so a CI
machine without native bf16 still exercises the path (emulated: correct but slow, so the runs
here are small). The exactness tests elsewhere pin fp32.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from encdec.cli import app
from encdec.decode import beam_search, greedy
from encdec.model import Transformer
from encdec.runtime import Runtime

from conftest import CACHE, random_batch, tiny

AUTO = Runtime.create("cpu", "auto")
pytestmark = [
    pytest.mark.bf16,
    pytest.mark.skipif(AUTO.amp_dtype is not torch.bfloat16,
                       reason="precision auto is fp32 on this CPU; the bf16 leg runs these with "
                              "ENCDEC_FORCE_PRECISION=bf16"),
]
runner = CliRunner()
ARGS = ["--data", "synthetic:copy", "--preset", "tiny", "--no-evaluate",
        "--set", "train.max_tokens=256", "--set", "train.log_every=1", "--set", "train.eval_every=1000",
        "--set", "train.warmup_steps=2", "--set", "train.dev_bleu_sentences=0"]


def losses(run) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "loss" in r}


def train(out, steps, cache, *extra, precision="auto"):
    r = runner.invoke(app, ["train", "--out", str(out), "--steps", str(steps), *ARGS, "--precision", precision,
                            "--set", f"data.cache_dir={cache}", *extra], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert ("bfloat16 autocast" in r.output) == (precision == "auto")
    return losses(out)


def test_bf16_training_follows_fp32_and_lowers_the_loss(tmp_path):
    cache = CACHE
    bf16 = train(tmp_path / "bf16", 12, cache)
    fp32 = train(tmp_path / "fp32", 12, cache, precision="fp32")
    assert bf16[1] == pytest.approx(fp32[1], rel=5e-3)  # same weights, same batch: bf16 rounding only
    assert bf16[12] == pytest.approx(fp32[12], rel=5e-2)  # 12 updates later, still on the same path
    assert bf16[12] < 0.8 * bf16[1]


def test_bf16_resume_repeats_the_straight_losses_exactly(tmp_path):
    """Resume restores weights, optimizer, RNG and data position: in bf16 as in fp32, the resumed
    run computes exactly what the straight run did (same machine, same kernels)."""
    cache = CACHE
    sched = ["--set", "train.schedule=inverse_sqrt"]  # LR by step alone, so the shorter first budget changes nothing
    straight = train(tmp_path / "straight", 8, cache, *sched)
    train(tmp_path / "resumed", 3, cache, *sched)
    resumed = train(tmp_path / "resumed", 8, cache, *sched)
    assert resumed == straight


def test_bf16_two_gloo_ranks_follow_one_process_with_accum_2(tmp_path):
    """DDP in bf16: the same batches and weights as accumulation, summed in another order, so the
    losses agree to bf16's rounding rather than exactly."""
    cache = CACHE
    one = train(tmp_path / "one", 6, cache, "--accum", "2")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "encdec",
           "train", "--out", str(tmp_path / "two"), "--steps", "6", *ARGS, "--precision", "auto",
           "--set", f"data.cache_dir={cache}"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    two = losses(tmp_path / "two")
    assert sorted(two) == list(range(1, 7))
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-2)


@pytest.mark.parametrize("wiring", ["final", "dense"])
def test_bf16_incremental_decoding_follows_full_decoding(wiring):
    torch.manual_seed(0)
    model = Transformer(tiny(wiring=wiring)).eval()
    batch = random_batch()
    with torch.no_grad(), AUTO.autocast():
        full = model(batch.src, batch.src_mask, batch.tgt_in).logits.float()  # (B, T, V)
        cache, steps = model.start_decoding(batch.src, batch.src_mask), []
        for t in range(batch.tgt_in.size(1)):
            logits, cache = model.decode_step(batch.tgt_in[:, t : t + 1], cache)
            steps.append(logits.float())
    inc = torch.cat(steps, 1)
    keep = batch.tgt_out != 0  # real target positions
    # bf16 keeps 8 mantissa bits: logits of order 1 agree to a few 1e-2, and rank the same tokens
    torch.testing.assert_close(inc[keep], full[keep], atol=0.1, rtol=0.05)
    agree = (inc[keep].argmax(-1) == full[keep].argmax(-1)).float().mean()
    assert agree >= 0.9


def test_bf16_beam_one_equals_greedy():
    torch.manual_seed(1)
    model = Transformer(tiny(wiring="dense")).eval()
    batch = random_batch(seed=3)
    with AUTO.autocast():
        g = greedy(model, batch.src, batch.src_mask, max_extra=6)
        b = beam_search(model, batch.src, batch.src_mask, beam=1, alpha=0.0, max_extra=6)
    assert [list(h[0].tokens) for h in b] == g
