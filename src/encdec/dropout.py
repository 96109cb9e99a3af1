"""Inverted dropout with a cheaper random mask than `nn.Dropout`'s (timings: benchmarks/README.md).

PyTorch's CPU dropout draws one random number per element from its (serial) generator, a
visible share of a training step of a small model (benchmarks/profile_step.py). Here
one 64-bit draw gives three 16-bit uniform integers: an element is kept when its integer is at
or above round(p * 65536), so the drop rate is that over 65536 (0.100006 for p = 0.1) and the
kept values are scaled by 1 / (1 - that rate): the expectation is exact. The draws come from
torch's default generator, so seeding and checkpointed RNG state make runs reproducible as
before. Only the boolean mask is kept for backward.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

_LEVELS = 1 << 16


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[Tensor, float]:
    """A bool mask of `shape` (True = keep) and the scale 1 / (1 - actual drop rate)."""
    n = shape.numel()
    threshold = round(p * _LEVELS)
    draws = torch.empty((n + 2) // 3, 4, dtype=torch.int16, device=device)
    draws.view(torch.int64).random_()  # 63 random bits: int16 columns 0-2 are uniform over all 65536 values
    keep = draws[:, :3].reshape(-1)[:n].view(shape) >= threshold - _LEVELS // 2
    return keep, _LEVELS / (_LEVELS - threshold)


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, keep: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None, None


class Dropout(nn.Module):
    """Drop-in for `nn.Dropout(p)` (identity in eval mode or at p = 0)."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p={p} must be in [0, 1)")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep, scale = keep_mask(x.shape, self.p, x.device)
        return _MaskedScale.apply(x, keep, scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"
