"""`encdec.linear`: the fast inference products equal F.linear, and exist only inside their block."""

import pytest
import torch
import torch.nn.functional as F

from encdec.config import ModelConfig
from encdec.linear import BACKENDS, DECODE_GEMM, InferenceWeights, Linear, decode_backend, to_plain
from encdec.model import Transformer


@pytest.mark.parametrize("backend", [b for b, available in BACKENDS.items() if available])
def test_inference_product_equals_f_linear_for_every_row_count(backend):
    torch.manual_seed(0)
    w, b = torch.randn(24, 16), torch.randn(24)
    fast = InferenceWeights(w, backend=backend)
    assert fast.backend == backend
    for rows in (1, 3, 32, 5, 7, 3, 64):  # more row counts than are kept prepared: old ones are dropped
        x = torch.randn(rows, 16)
        torch.testing.assert_close(fast.matmul(x, b), F.linear(x, w, b))
        torch.testing.assert_close(fast.matmul(x, None), F.linear(x, w))
    assert len(fast.prepared) == (0 if backend == "plain" else 4)


def test_decode_backend_follows_the_cpu_vendor_and_the_override(monkeypatch):
    from encdec import linear

    monkeypatch.delenv(DECODE_GEMM, raising=False)
    monkeypatch.setattr(linear, "BACKENDS", {"mkl": True, "onednn": True, "plain": True})
    monkeypatch.setattr(linear, "cpu_is_intel", lambda: True)
    assert decode_backend() == "mkl"
    monkeypatch.setattr(linear, "cpu_is_intel", lambda: False)
    assert decode_backend() == "onednn"
    monkeypatch.setattr(linear, "BACKENDS", {"mkl": True, "onednn": False, "plain": True})
    assert decode_backend() == "mkl"  # a build without oneDNN's reorder
    monkeypatch.setenv(DECODE_GEMM, "plain")
    assert decode_backend() == "plain"
    monkeypatch.setenv(DECODE_GEMM, "onednn")
    with pytest.raises(ValueError, match="no onednn linear"):
        decode_backend()
    monkeypatch.setenv(DECODE_GEMM, "cublas")
    with pytest.raises(ValueError, match="choose one of mkl, onednn, plain"):
        decode_backend()


def test_linear_is_plain_outside_the_block_and_fast_inside_it():
    torch.manual_seed(0)
    model = torch.nn.Sequential(Linear(16, 8), torch.nn.ReLU(), Linear(8, 4))
    x = torch.randn(2, 5, 16)
    ref = model(x).detach()
    assert model[0].fast is None
    with torch.no_grad(), InferenceWeights.active(model):
        outer = model[0].fast
        assert outer is not None
        with InferenceWeights.active(model):  # re-entrant: the outer copies stay
            assert model[0].fast is outer
        assert model[0].fast is outer
        torch.testing.assert_close(model(x), ref)
        with torch.enable_grad():  # autograd recording: the plain product, gradients reach the weights
            model(x).sum().backward()
        assert model[0].weight.grad is not None
    assert model[0].fast is None and model[2].fast is None


def test_decoding_after_a_fused_adamw_step_uses_the_new_weights():
    """The fused AdamW step does not bump PyTorch's version counter, so a cache keyed on it would go
    stale; the copies live only inside fast_inference(), and each block sees the current weights."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=50, d_model=32, n_heads=4, d_ff=64, n_enc_layers=1, n_dec_layers=2, dropout=0.0)
    model = Transformer(cfg)
    src, tgt = torch.randint(3, 50, (2, 7)), torch.randint(3, 50, (2, 6))
    mask = torch.ones(2, 7, dtype=torch.bool)

    def stepwise_logits():
        with torch.inference_mode(), model.fast_inference():
            cache, steps = model.start_decoding(src, mask), []
            for t in range(tgt.size(1)):
                logits, cache = model.decode_step(tgt[:, t : t + 1], cache)  # (B, 1, V)
                steps.append(logits)
            return torch.cat(steps, dim=1)  # (B, T, V)

    before = stepwise_logits()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, fused=True)
    model(src, mask, tgt).logits.sum().backward()
    opt.step()
    after = stepwise_logits()
    full = model(src, mask, tgt).logits.detach()  # autograd on: the plain products
    torch.testing.assert_close(after, full, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(before, after)


def test_to_plain_keeps_the_parameters():
    layer = torch.nn.Sequential(Linear(4, 3))
    w = layer[0].weight
    to_plain(layer)
    assert type(layer[0]) is torch.nn.Linear and layer[0].weight is w
