"""Where one training step of the `small` preset spends its time on this CPU, and the GEMM ceiling.

usage: .venv/bin/python benchmarks/profile_step.py [DROPOUT [PRECISION]]   (defaults: 0, the main
job's dropout, and fp32; PRECISION fp32 | bf16 | auto)
Random tokens, a batch of 128 x 30 source / 32 target tokens, all cores, encdec's own training
step (`encdec.optim.train_step`).
"""

import sys
import time
from dataclasses import replace

import torch
from torch.profiler import ProfilerActivity, profile

from encdec.config import TrainConfig, preset
from encdec.data.batching import Batch
from encdec.model import Transformer
from encdec.optim import make_optimizer, train_step
from encdec.runtime import Runtime


def timed(fn, repeats: int) -> float:
    for _ in range(2):
        fn()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def main() -> None:
    a, b = torch.randn(4096, 256), torch.randn(256, 1024)
    dt = timed(lambda: a @ b, 20)
    print(f"torch.mm 4096x256 @ 256x1024: {2 * 4096 * 256 * 1024 / dt / 1e9:.0f} GFLOP/s fp32")
    a16, b16 = a.bfloat16(), b.bfloat16()
    dt = timed(lambda: a16 @ b16, 5)
    print(f"torch.mm 4096x256 @ 256x1024: {2 * 4096 * 256 * 1024 / dt / 1e9:.0f} GFLOP/s bf16")

    torch.manual_seed(0)
    dropout = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
    model = Transformer(replace(preset("small"), dropout=dropout))
    B, S, T = 128, 30, 32
    src, tgt = torch.randint(4, 8000, (B, S)), torch.randint(4, 8000, (B, T))
    batch = Batch(src, torch.ones(B, S, dtype=torch.bool), tgt, tgt)
    tc = TrainConfig(lr=1e-4, max_steps=1)
    precision = sys.argv[2] if len(sys.argv) > 2 else "fp32"
    opt, rt = make_optimizer(model, tc), Runtime.create("cpu", precision)

    def step():
        train_step(model, [batch], opt, tc.lr, tc, rt)

    dt = timed(step, 5)
    print(f"training step ({rt.describe()}): {dt:.3f} s, {B * T / dt:.0f} target tokens/s")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
