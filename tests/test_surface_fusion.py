"""SurfaceFusion (Liu et al. 2021): training (the fused output loss), full decoding and incremental
decoding compute the same fused distribution."""

import pytest
import torch

from encdec.data.vocab import PAD
from encdec.loss import fused_output_loss
from encdec.metrics import sequence_loss
from encdec.model import Transformer

from conftest import random_batch, tiny

LAM = 0.2


@pytest.fixture
def model():
    torch.manual_seed(0)
    return Transformer(tiny(surface_fusion=LAM, wiring="dense")).eval()


def test_full_forward_returns_the_fused_log_probabilities(model):
    batch = random_batch()
    logp = model(batch.src, batch.src_mask, batch.tgt_in).logits  # (B, T, V)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(logp.shape[:2]))  # a distribution
    out = model(batch.src, batch.src_mask, batch.tgt_in, project=False)
    w = model.output_weight
    by_hand = torch.log_softmax((1 - LAM) * torch.log_softmax(out.hidden @ w.t(), -1)
                                + LAM * torch.log_softmax(out.surface @ w.t(), -1), -1)
    torch.testing.assert_close(logp, by_hand)
    plain = torch.log_softmax(out.hidden @ w.t(), -1)
    assert (logp - plain).abs().max() > 1e-3  # the source side really contributes


def test_incremental_decoding_equals_full_decoding(model):
    batch = random_batch()
    full = model(batch.src, batch.src_mask, batch.tgt_in).logits
    cache, steps = model.start_decoding(batch.src, batch.src_mask), []
    for t in range(batch.tgt_in.size(1)):
        logits, cache = model.decode_step(batch.tgt_in[:, t : t + 1], cache)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_training_loss_is_the_loss_of_the_decoded_distribution(model, smoothing):
    """The fused output loss on (hidden, surface) equals the plain loss on the full forward's fused
    log-probabilities, with the same gradients for every parameter."""
    batch = random_batch()
    model.train()
    out = model(batch.src, batch.src_mask, batch.tgt_in, project=False)
    fused, _, n = fused_output_loss(out.hidden, model.output_weight, batch.tgt_out, pad_id=PAD, smoothing=smoothing,
                                    chunk=5, surface=out.surface, lam=LAM)
    fused.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    logp = model(batch.src, batch.src_mask, batch.tgt_in).logits
    plain, _, n_plain = sequence_loss(logp, batch.tgt_out, pad_id=PAD, smoothing=smoothing)
    plain.backward()
    assert n == n_plain
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    assert any(k.startswith("surface.") for k in grads)
    for k, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[k], p.grad, rtol=1e-4, atol=1e-6, msg=k)


def test_surface_fusion_is_validated_and_counted():
    with pytest.raises(ValueError, match="surface_fusion"):
        tiny(surface_fusion=1.0)
    with pytest.raises(ValueError, match="surface_fusion"):
        tiny(surface_fusion=0.2, n_enc_layers=0)
    plain, fused = Transformer(tiny()), Transformer(tiny(surface_fusion=LAM))
    extra = sum(p.numel() for p in fused.parameters()) - sum(p.numel() for p in plain.parameters())
    d, f = 32, 64  # tiny(): one head of d_model (q, kv, out) and a feed-forward layer
    assert extra == (d * d + d) + (d * 2 * d + 2 * d) + (d * d + d) + (d * f + f) + (f * d + d)
