"""The only place that decides device, autocast dtype, threads and seeds (../shared/STYLE.md C9).

`precision="auto"` picks bf16 autocast on a CPU with native bf16 (AVX512_BF16 or AMX) and fp32
elsewhere. On a GPU it picks fp32 with TF32 matrix products: with cuDNN attention switched off
(below), bf16 autocast measured 0.88-0.97x TF32's speed at 3,000-token batches and 1.15-1.47x
only at 25,000 (H200, benchmarks/gpu_check.sh, README "Scale out"), so TF32 is the faster choice
at the batch sizes encdec trains with by default. `--precision bf16` still selects bf16 there. The
environment variable ENCDEC_FORCE_PRECISION=bf16|fp32 overrides auto's choice, so the bf16 path
can be tested on a CPU without native bf16 (emulated: correct, but slow) and vice versa.

Decoding has its own choice (`decode_autocast`): under "auto" it runs in fp32 everywhere, even
where training runs in bf16, because on a CPU the fp32 decoding path with weights laid out for
few rows (`encdec.linear`) is faster than bf16 autocast (2-core AMD EPYC with AVX512_BF16,
`benchmarks/decode_speed.py --decoders encdec,encdec-bf16`: greedy 262 vs 191 and beam 4 83.6
vs 72.8 sentences/s) and fp32 is the reference. An explicit bf16 (or ENCDEC_FORCE_PRECISION=bf16)
decodes in bf16 too.
"""

from __future__ import annotations

import functools
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

FORCE_PRECISION = "ENCDEC_FORCE_PRECISION"


@functools.cache
def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512_BF16 or AMX)."""
    flags = _cpuinfo()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_is_intel() -> bool:
    """True on Intel CPUs (MKL's home ground); False on AMD and others, or when unknown."""
    return "GenuineIntel" in _cpuinfo()


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None = plain fp32
    decode_amp_dtype: torch.dtype | None = None  # the same for decoding (module docstring)

    @staticmethod
    def create(device: str = "auto", precision: str = "auto") -> Runtime:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            dev = torch.device(device)
        except RuntimeError as e:
            raise ValueError(f"unknown device {device!r}: {e}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but no CUDA GPU is available; use --device cpu")
        decode_amp = None
        if precision == "fp32":
            amp = None
        elif precision == "bf16":
            amp = decode_amp = torch.bfloat16
        elif precision == "auto":
            forced = os.environ.get(FORCE_PRECISION, "")
            if forced not in ("", "fp32", "bf16"):
                raise ValueError(f"{FORCE_PRECISION}={forced!r}; choose fp32 or bf16 (or unset it)")
            native = dev.type == "cpu" and cpu_has_bf16()  # GPUs: TF32 (module docstring)
            amp = torch.bfloat16 if forced == "bf16" or (native and not forced) else None
            decode_amp = torch.bfloat16 if forced == "bf16" else None
        else:
            raise ValueError(f"precision={precision!r}; choose auto, fp32 or bf16")
        if dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            # cuDNN's attention builds an execution plan for every new batch shape (~100 ms of CPU
            # in its backward on an H200), and training batches come in dozens of shapes: this was
            # bf16's 13-20x slowdown (benchmarks/gpu_check.sh, docs/gpu/). Flash / memory-efficient
            # attention need no plan.
            torch.backends.cuda.enable_cudnn_sdp(False)
        return Runtime(dev, amp, decode_amp)

    def autocast(self):
        """Training's (and every forward pass's) precision."""
        return _autocast(self.device, self.amp_dtype)

    def decode_autocast(self):
        """Decoding's precision (module docstring)."""
        return _autocast(self.device, self.decode_amp_dtype)

    def describe(self) -> str:
        prec = "fp32" if self.amp_dtype is None else f"{str(self.amp_dtype).removeprefix('torch.')} autocast"
        if self.decode_amp_dtype != self.amp_dtype:
            prec += f" (decoding {'fp32' if self.decode_amp_dtype is None else self.decode_amp_dtype})"
        threads = f", {torch.get_num_threads()} threads" if self.device.type == "cpu" else ""
        return f"{self.device.type} {prec}{threads}"


def _autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to dtype, or off (None) even inside a caller's autocast (evaluation within training)."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def configure_threads() -> None:
    """Use every core we were given, unless the user pinned OMP_NUM_THREADS."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
