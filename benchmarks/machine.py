"""What machine a benchmark ran on, and what its matrix products can do: shared by the benchmarks.

`describe()` names the CPU and the flags that decide encdec's speed paths (AVX-512,
AVX512_BF16, AMX; `precision auto` picks bf16 where either of the last two exists).
`gemm_peak()` is the best rate of plain `torch.mm` on the given shapes in the given precision,
with the threads the benchmark uses: the ceiling a training step's products can approach.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def describe() -> str:
    """'AMD EPYC (family 25, model 1), 2 threads, flags avx2 (no avx512f, avx512_bf16, amx_bf16), torch 2.13.0'.

    Family and model number tell apart CPU generations that a virtual machine names alike
    ("AMD EPYC" is a Zen 2, 3 or 4)."""
    model, flags, info = platform.processor() or "unknown CPU", set(), {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() in ("cpu family", "model"):
                info[key.strip()] = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    if len(info) == 2:
        model += f" (family {info['cpu family']}, model {info['model']})"
    have = [f for f in FLAGS if f in flags]
    lack = [f for f in FLAGS if f not in flags]
    return (f"{model}, {torch.get_num_threads()} threads, flags {' '.join(have) or 'none of ' + ' '.join(FLAGS)}"
            f"{' (no ' + ', '.join(lack) + ')' if have and lack else ''}, torch {torch.__version__}")


def gemm_peak(shapes: list[tuple[int, int, int]], dtype: torch.dtype, seconds: float = 0.5) -> float:
    """Best GFLOP/s of torch.mm over `shapes` (m, k, n): (m, k) @ (k, n) in `dtype`, ~`seconds` each."""
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
        torch.mm(a, b)  # warm-up
        reps, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds or reps < 3:
            torch.mm(a, b)
            reps += 1
        best = max(best, 2 * m * k * n * reps / elapsed / 1e9)
    return best
