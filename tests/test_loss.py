"""The fused output loss (encdec.loss) against the plain logits + log-softmax loss
(metrics.sequence_loss): value, d/d hidden and d/d output weight."""

import pytest
import torch
import torch.nn.functional as F

from encdec.data.vocab import PAD
from encdec.loss import fused_output_loss
from encdec.metrics import sequence_loss

B, T, D, V = 3, 7, 16, 50


def inputs(dtype: torch.dtype):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(B, T, D, generator=g).to(dtype).requires_grad_()
    weight = (0.3 * torch.randn(V, D, generator=g)).requires_grad_()  # fp32 master weight, as in training
    target = torch.randint(4, V, (B, T), generator=g)
    target[0, 5:] = PAD  # padded rows cost nothing and get no gradient
    target[2, 3:] = PAD
    return hidden, weight, target


def reference(hidden, weight, target, smoothing):
    logits = hidden.float() @ weight.t()  # (B, T, V)
    loss, nll, n = sequence_loss(logits, target, pad_id=PAD, smoothing=smoothing)
    loss.backward()
    return loss, nll, n


# fp32: the same sums in another order; bf16 hidden states: products of bf16-rounded operands
TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_fused_loss_and_gradients_equal_the_plain_loss(dtype, smoothing):
    h_ref, w_ref, target = inputs(dtype)
    loss_ref, nll_ref, n_ref = reference(h_ref, w_ref, target, smoothing)
    h, w, _ = inputs(dtype)
    loss, nll, n = fused_output_loss(h, w, target, pad_id=PAD, smoothing=smoothing, chunk=4)  # chunks < 14 rows
    loss.backward()
    tol = TOLERANCE[dtype]
    assert n == n_ref == int((target != PAD).sum())
    torch.testing.assert_close(loss.float(), loss_ref, **tol)
    torch.testing.assert_close(nll.float(), nll_ref, **tol)
    torch.testing.assert_close(h.grad.float(), h_ref.grad.float(), **tol)
    torch.testing.assert_close(w.grad, w_ref.grad, **tol)
    assert h.grad.dtype == dtype and w.grad.dtype == torch.float32
    assert h.grad[target == PAD].abs().max() == 0  # padded positions get no gradient


def test_without_smoothing_the_loss_is_cross_entropy():
    hidden, weight, target = inputs(torch.float32)
    loss, nll, n = fused_output_loss(hidden, weight, target, pad_id=PAD, smoothing=0.0, chunk=5)
    ce = F.cross_entropy((hidden @ weight.t()).view(-1, V), target.view(-1), ignore_index=PAD, reduction="sum")
    torch.testing.assert_close(loss, ce)
    torch.testing.assert_close(nll, ce.detach())


def test_smoothing_matches_cross_entropy_label_smoothing():
    """The paper's smoothing spreads epsilon over the whole vocabulary, as PyTorch's does."""
    hidden, weight, target = inputs(torch.float32)
    loss, _, _ = fused_output_loss(hidden, weight, target, pad_id=PAD, smoothing=0.1, chunk=3)
    ce = F.cross_entropy((hidden @ weight.t()).view(-1, V), target.view(-1), ignore_index=PAD, reduction="sum",
                         label_smoothing=0.1)
    torch.testing.assert_close(loss, ce)
