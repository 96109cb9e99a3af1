"""Linear layers with a fast product for decoding: weights laid out for a few rows at a time.

`nn.Linear` computes x W^T with W stored (out, in). At the few rows of a decoding step (batch x
beam, 4-128 rows) the library GEMMs are much slower with that operand than with the weight laid
out ahead of time for the row count. Two such layouts exist in PyTorch's CPU build, and which
one wins depends on the CPU (`benchmarks/linear_speed.py` measures them all; the timings are in
benchmarks/README.md):

- "mkl": MKL's packed format (`cblas_sgemm_pack`, what CTranslate2 uses on Intel): fastest on
  the Intel CPU the decoding path was tuned on (Cascade Lake);
- "onednn": oneDNN's linear with the weight reordered for the row count
  (`torch.ops.mkldnn._reorder_linear_weight`): on an AMD EPYC (AVX2) 1.3-1.8x MKL's packed
  product for the 8k-word output layer and 15-32% faster greedy decoding end to end. MKL is
  Intel's library, tuned for Intel CPUs; CTranslate2 likewise avoids it on other vendors' CPUs.

`decode_backend()` picks "mkl" on Intel and "onednn" elsewhere; ENCDEC_DECODE_GEMM=mkl|onednn|plain
overrides it (A/B benchmarks, tests). "plain" multiplies by a contiguous W^T. A prepared matrix
is built for one row count, so it is made on first use for each row count and kept (a few at a
time); a decoding loop keeps its row count until a sentence ends and leaves the batch.

These copies are only valid while the weights do not change, and PyTorch's version counter does
not see every change (the fused AdamW step leaves it alone), so they exist only inside
`InferenceWeights.active(model)` (`Transformer.fast_inference`), which decoding enters and
leaves. Outside it, and whenever autograd is recording, `Linear` is exactly `nn.Linear`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encdec.runtime import cpu_is_intel

DECODE_GEMM = "ENCDEC_DECODE_GEMM"
BACKENDS = {
    "mkl": torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear"),
    "onednn": torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"),
    "plain": True,
}  # backend -> available in this PyTorch build
_PREPARED_ROW_COUNTS = 4  # prepared copies kept per matrix (one per row count, oldest dropped first)


def decode_backend() -> str:
    """The decoding product for this CPU: "mkl" on Intel, "onednn" elsewhere (or ENCDEC_DECODE_GEMM)."""
    forced = os.environ.get(DECODE_GEMM, "")
    if forced:
        if forced not in BACKENDS:
            raise ValueError(f"{DECODE_GEMM}={forced!r}; choose one of {', '.join(BACKENDS)} (or unset it)")
        if not BACKENDS[forced]:
            raise ValueError(f"{DECODE_GEMM}={forced}: this PyTorch build has no {forced} linear")
        return forced
    preferred = ("mkl", "onednn") if cpu_is_intel() else ("onednn", "mkl")
    return next(b for b in (*preferred, "plain") if BACKENDS[b])


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 has no device argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


class InferenceWeights:
    """One weight matrix w (out, in) in the layouts of fast inference products."""

    def __init__(self, w: Tensor, backend: str | None = None):
        self.w = w.detach()  # (out, in)
        self.wt: Tensor | None = None  # (in, out), made on first use
        backend = backend or decode_backend()
        self.backend = backend if w.device.type == "cpu" and w.dtype == torch.float32 else "plain"
        self.prepared: dict[int, Tensor] = {}  # row count -> weight laid out for it

    def matmul(self, x: Tensor, bias: Tensor | None) -> Tensor:
        """x (rows, in) -> x w^T + bias (rows, out)."""
        rows = x.size(0)
        if self.backend != "plain" and x.dtype == torch.float32 and rows and not _autocast_on("cpu"):
            p = self.prepared.get(rows)
            if p is None:
                if len(self.prepared) == _PREPARED_ROW_COUNTS:
                    del self.prepared[next(iter(self.prepared))]
                p = self.prepared[rows] = (torch.ops.mkl._mkl_reorder_linear_weight(self.w, rows)
                                           if self.backend == "mkl"
                                           else torch.ops.mkldnn._reorder_linear_weight(self.w, rows))
            if self.backend == "mkl":
                return torch.ops.mkl._mkl_linear(x, p, self.w, bias, rows)
            return torch.ops.mkldnn._linear_pointwise(x, p, bias, "none", [], "")
        if self.wt is None:
            self.wt = self.w.t().contiguous()
        return x @ self.wt if bias is None else torch.addmm(bias, x, self.wt)

    @staticmethod
    @contextmanager
    def active(model: nn.Module) -> Iterator[None]:
        """Within the block every `Linear` of `model` multiplies through `InferenceWeights` made on
        entry. Re-entrant: an inner block leaves the outer block's copies in place."""
        made = [m for m in model.modules() if isinstance(m, Linear) and m.fast is None]
        with torch.no_grad():
            for m in made:
                m.fast = InferenceWeights(m.weight)
        try:
            yield
        finally:
            for m in made:
                m.fast = None


class Linear(nn.Linear):
    """nn.Linear (same parameters, same state dict) that uses `InferenceWeights` when active."""

    fast: InferenceWeights | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.fast is None or torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(-1, x.size(-1))  # (rows, in)
        return self.fast.matmul(flat, self.bias).view(*x.shape[:-1], self.out_features)


def to_plain(model: nn.Module) -> nn.Module:
    """Replace every `Linear` in `model` by an `nn.Linear` sharing its parameters (for tools that
    match module types exactly, such as torch.ao's dynamic quantization). Returns `model`."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is Linear:
                plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None,
                                  device="meta")
                plain.weight, plain.bias = child.weight, child.bias
                setattr(parent, name, plain)
    return model
