"""The training loss fused with the output layer, in row chunks: logits are never materialised.

A (tokens x vocabulary) logit matrix is the largest tensor of a small translation model's step
(3.3k tokens x 8k vocabulary = 105 MB in fp32), written by the output GEMM, read and rewritten
by log-softmax, and again by its backward. Here each chunk of rows computes its logits, its
label-smoothed loss and, while training, the gradient of the loss with respect to those
logits, (1 - e) (softmax - onehot) + e (softmax - 1/V), which it immediately multiplies back
into the gradients of the hidden states and of the output matrix. The backward pass then only
scales the stored gradients. Same loss as `metrics.sequence_loss` (tested to float tolerance).
One exp pass per chunk serves loss and gradient: the softmax is taken in place, and the
log-sum-exp is recovered as max(z) - log(max(softmax)), whose probability is at least 1/V and so
never underflows (a target's probability may). The chunk's buffers are reused: a fresh
(rows x V) tensor per chunk costs page faults (benchmarks/README.md, the speed levers).

With SurfaceFusion (`model.SurfaceFusion`) a second set of rows, the source-side states, goes
through the same output matrix, and the loss is taken on the fused log-probabilities
z = (1 - lam) log_softmax(z_dec) + lam log_softmax(z_src). Since the loss's gradient g with
respect to z sums to zero over the vocabulary, d loss / d z_dec = (1 - lam) g and
d loss / d z_src = lam g: the same chunked scheme applies to both.

Under bf16 autocast (`matmul_dtype=torch.bfloat16`) the products of the output layer run in bf16
like every other layer's: hidden states, output matrix and d loss / d logits are rounded to bf16,
the logits come back in bf16 and everything after them (softmax, the sums, the accumulated
gradient of the output matrix) is fp32. These products are about a third of a `small` step's
FLOPs; left in fp32 they ran at MKL's fp32 rate (a quarter of bf16's on an AVX512_BF16 CPU).
tests/test_loss.py states the tolerances against the fp32 loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK_ROWS = 1024  # 1024 x 8000 fp32 logits = 33 MB per chunk


def _add_product(total: Tensor, a: Tensor, b: Tensor) -> None:
    """total += a @ b; in place when the dtypes agree, else the product rounded to a's dtype."""
    if a.dtype == total.dtype:
        total.addmm_(a, b)
    else:
        total += torch.mm(a, b)


class _FusedOutputLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, target: Tensor, smoothing: float, chunk: int,
                surface: Tensor | None, lam: float, matmul_dtype: torch.dtype):
        """hidden (N, D), weight (V, D), target (N,), surface (N, D) or None ->
        (smoothed loss sum, NLL sum), fp32 (or fp64) scalars. Products in `matmul_dtype`."""
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1] or ctx.needs_input_grad[5]
        V = weight.size(0)
        w = weight.to(matmul_dtype)  # (V, D)
        acc = torch.promote_types(hidden.dtype, torch.float32)  # softmax and sums: fp32 at least
        grad_hidden = torch.empty_like(hidden) if need_grad else None
        grad_surface = torch.empty_like(surface) if need_grad and surface is not None else None
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_grad else None
        loss = hidden.new_zeros((), dtype=acc)
        nll = hidden.new_zeros((), dtype=acc)
        rows = min(chunk, hidden.size(0))
        # buffers reused by every chunk (fresh (rows x V) tensors cost page faults each time)
        logits_buf = hidden.new_empty((rows, V), dtype=matmul_dtype)  # logits, then d loss / d logits
        work_buf = hidden.new_empty((rows, V), dtype=acc) if matmul_dtype != acc else None  # the same in acc
        for start in range(0, hidden.size(0), chunk):
            h, t = hidden[start : start + chunk].to(matmul_dtype), target[start : start + chunk]  # (n, D), (n,)
            n = h.size(0)
            z = torch.mm(h, w.t(), out=logits_buf[:n])  # (n, V) logits
            if surface is not None:  # fused log-probabilities, (n, V) in acc
                hs = surface[start : start + chunk].to(matmul_dtype)
                z = (1 - lam) * torch.log_softmax(z, -1, dtype=acc) + lam * torch.log_softmax(hs @ w.t(), -1, dtype=acc)
            work = z if z.dtype == acc else work_buf[:n].copy_(z)  # (n, V) logits in acc
            z_max = work.amax(dim=-1)  # (n,)
            z_mean, z_t = work.mean(dim=-1), work.gather(1, t[:, None]).squeeze(1)  # (n,) each
            p = torch.softmax(work, -1, out=work)  # (n, V), in place: one exp pass serves loss and gradient
            lse = z_max - p.amax(dim=-1).log()  # (n,); the largest probability is >= 1/V: no underflow
            nll_rows = lse - z_t  # (n,)
            nll = nll + nll_rows.sum()
            loss = loss + (1 - smoothing) * nll_rows.sum() + smoothing * (lse - z_mean).sum()
            if need_grad:  # d loss / d logits = softmax - smoothing / V - (1 - smoothing) onehot
                g = p.sub_(smoothing / V)
                g[torch.arange(n, device=g.device), t] -= 1 - smoothing
                if g.dtype != matmul_dtype:
                    g = logits_buf[:n].copy_(g)  # rounded
                gw = torch.mm(g, w)  # (n, D)
                if surface is None:
                    grad_hidden[start : start + chunk] = gw
                    _add_product(grad_weight, g.t(), h)  # (V, D)
                else:  # g sums to 0 over the vocabulary: each side's logits get its weight times g
                    grad_hidden[start : start + chunk] = gw * (1 - lam)
                    grad_surface[start : start + chunk] = gw * lam
                    _add_product(grad_weight, g.t(), ((1 - lam) * h.to(acc) + lam * hs.to(acc)).to(matmul_dtype))
        ctx.save_for_backward(grad_hidden, grad_weight, grad_surface)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_nll: Tensor):
        grad_hidden, grad_weight, grad_surface = ctx.saved_tensors
        gh = grad_hidden * grad_loss.to(grad_hidden.dtype) if ctx.needs_input_grad[0] else None
        gw = (grad_weight * grad_loss).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None
        gs = grad_surface * grad_loss.to(grad_surface.dtype) if ctx.needs_input_grad[5] else None
        return gh, gw, None, None, None, gs, None, None


def fused_output_loss(hidden: Tensor, weight: Tensor, target: Tensor, *, pad_id: int, smoothing: float,
                      chunk: int = CHUNK_ROWS, surface: Tensor | None = None, lam: float = 0.0,
                      matmul_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor, int]:
    """hidden (B, T, D) final decoder states, weight (V, D) output matrix, target (B, T) ->
    (smoothed loss sum, NLL sum, number of real tokens), as `metrics.sequence_loss` on the logits.

    `surface` (B, T, D): SurfaceFusion's source-side states, fused with weight `lam`.
    `matmul_dtype`: the dtype of the output layer's products (default: the hidden states')."""
    keep = target != pad_id  # (B, T)
    rows = hidden[keep]  # (N, D) real target positions only: padding costs nothing
    side = surface[keep] if surface is not None else None
    with torch.autocast(hidden.device.type, enabled=False):
        loss, nll = _FusedOutputLoss.apply(rows, weight, target[keep], float(smoothing), chunk, side, float(lam),
                                           matmul_dtype or hidden.dtype)
    return loss, nll.detach(), int(keep.sum())
