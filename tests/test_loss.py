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


@pytest.mark.parametrize("surface", [False, True])
def test_bf16_products_stay_within_stated_tolerances_of_fp32(surface):
    """Training under bf16 autocast runs the output layer's products in bf16 (fp32 hidden states and
    master weight, fp32 softmax and sums). Stated tolerances against the all-fp32 loss, at logits of
    a trained model's size (|z| up to ~15): loss within 1e-3 relative, gradients within 2% in
    relative Frobenius norm (measured: ~1e-5 and ~0.3-0.7%)."""
    g = torch.Generator().manual_seed(1)
    n, d, v = 300, 64, 2000
    hidden = F.layer_norm(torch.randn(1, n, d, generator=g), (d,))  # the decoder's final LayerNorm
    weight = 2 * torch.randn(v, d, generator=g) / d**0.5
    side = F.layer_norm(torch.randn(1, n, d, generator=g), (d,)) if surface else None
    target = torch.randint(4, v, (1, n), generator=g)
    results = []
    for dtype in (None, torch.bfloat16):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        s = side.clone().requires_grad_() if surface else None
        loss, nll, _ = fused_output_loss(h, w, target, pad_id=PAD, smoothing=0.1, surface=s, lam=0.2,
                                         matmul_dtype=dtype)
        loss.backward()
        results.append((loss.detach(), nll, h.grad, w.grad, s.grad if surface else h.grad))
    for exact, approx, what in zip(results[0], results[1], ("loss", "nll", "hidden", "weight", "surface")):
        assert approx.dtype == torch.float32, what
        rel = float((approx - exact).norm() / exact.norm())
        assert rel < (1e-3 if what in ("loss", "nll") else 2e-2), (what, rel)
        assert rel > 0 or what in ("loss", "nll"), f"{what}: bf16 products should differ from fp32 at all"


def test_a_target_far_below_the_best_logit_keeps_a_finite_exact_loss():
    """The loss takes log-sum-exp from the largest probability (>= 1/V, never underflows), so a
    target 200 nats below the best logit, whose probability underflows fp32, still has its exact loss."""
    hidden = torch.zeros(1, 2, D)
    hidden[0, :, 0] = 1.0
    weight = torch.zeros(V, D)
    weight[7, 0] = 100.0  # logit 100 for token 7
    weight[9, 0] = -100.0  # logit -100 for token 9
    target = torch.tensor([[9, 7]])
    loss, nll, _ = fused_output_loss(hidden, weight.requires_grad_(), target, pad_id=PAD, smoothing=0.0)
    ce = F.cross_entropy(hidden[0] @ weight.t(), target[0], reduction="sum")
    assert torch.isfinite(loss) and ce.item() > 199
    torch.testing.assert_close(nll, ce.detach())
