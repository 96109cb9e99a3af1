"""Linear layers with a fast product for decoding: weights laid out for a few rows at a time.

`nn.Linear` computes x W^T with W stored (out, in). At the few rows of a decoding step (batch x
beam, 4-128 rows) MKL's fp32 sgemm is much slower with that transposed operand than with the
same matrix stored (in, out), and faster still with MKL's packed format (`cblas_sgemm_pack`,
which is also what CTranslate2 uses); `benchmarks/linear_speed.py` measures the three, and
benchmarks/README.md has the timings. A packed matrix is built for one row count, so it is made on
first use for each row count and kept (a few at a time); a decoding loop keeps its row count
until a sentence ends and leaves the batch.

These copies are only valid while the weights do not change, and PyTorch's version counter does
not see every change (the fused AdamW step leaves it alone), so they exist only inside
`InferenceWeights.active(model)` (`Transformer.fast_inference`), which decoding enters and
leaves. Outside it, and whenever autograd is recording, `Linear` is exactly `nn.Linear`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_MKL_PACKED = torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")
_PACKED_ROW_COUNTS = 4  # packed copies kept per matrix (one per row count, oldest dropped first)


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 has no device argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


class InferenceWeights:
    """One weight matrix w (out, in) in the layouts of fast inference products."""

    def __init__(self, w: Tensor, packed: bool = True):
        self.w = w.detach()  # (out, in)
        self.wt: Tensor | None = None  # (in, out), made on first use
        self.use_packed = packed and _MKL_PACKED and w.device.type == "cpu" and w.dtype == torch.float32
        self.packed: dict[int, Tensor] = {}

    def matmul(self, x: Tensor, bias: Tensor | None) -> Tensor:
        """x (rows, in) -> x w^T + bias (rows, out)."""
        rows = x.size(0)
        if self.use_packed and x.dtype == torch.float32 and rows and not _autocast_on("cpu"):
            p = self.packed.get(rows)
            if p is None:
                if len(self.packed) == _PACKED_ROW_COUNTS:
                    del self.packed[next(iter(self.packed))]
                p = self.packed[rows] = torch.ops.mkl._mkl_reorder_linear_weight(self.w, rows)
            return torch.ops.mkl._mkl_linear(x, p, self.w, bias, rows)
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
