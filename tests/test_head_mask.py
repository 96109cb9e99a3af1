"""Head masks: a gate per head that acts in every code path (training, decoding, beam search)."""

import pytest
import torch

from encdec.decode import beam_search, greedy
from encdec.model import Transformer
from test_model import WIRINGS, incremental_logits

from conftest import random_batch, tiny


def _ones(model):
    c = model.cfg
    return {"enc": torch.ones(c.n_enc_layers, c.n_heads), "dec": torch.ones(c.n_dec_layers, c.n_heads),
            "cross": torch.ones(c.n_dec_layers, c.n_heads)}


def test_all_ones_mask_equals_no_mask(model, batch):
    plain = model(batch.src, batch.src_mask, batch.tgt_in).logits
    model.set_head_mask(_ones(model))
    torch.testing.assert_close(model(batch.src, batch.src_mask, batch.tgt_in).logits, plain)


@pytest.mark.parametrize(("kind", "layer", "head"), [("enc", 1, 2), ("dec", 0, 1), ("cross", 1, 3)])
def test_masking_a_head_equals_removing_its_output_columns(model, batch, kind, layer, head):
    plain = model(batch.src, batch.src_mask, batch.tgt_in).logits
    masks = _ones(model)
    masks[kind][layer, head] = 0.0
    model.set_head_mask(masks)
    masked = model(batch.src, batch.src_mask, batch.tgt_in).logits
    model.set_head_mask(None)
    stack = model.encoder if kind == "enc" else model.decoder
    attn = stack[layer].cross_attn if kind == "cross" else stack[layer].self_attn
    dh = model.cfg.head_dim
    with torch.no_grad():  # the head's context only enters through these columns of W_O
        attn.out.weight[:, head * dh : (head + 1) * dh] = 0.0
    removed = model(batch.src, batch.src_mask, batch.tgt_in).logits
    torch.testing.assert_close(masked, removed, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(plain, masked)


@pytest.mark.parametrize("wiring", WIRINGS)
def test_head_masks_act_in_incremental_decoding_and_beam_search(wiring):
    torch.manual_seed(0)
    model = Transformer(tiny(wiring=wiring)).eval()
    batch = random_batch()
    masks = {"enc": torch.tensor([[1.0, 0, 1, 1], [0, 0, 1, 1]]), "dec": torch.tensor([[1.0, 1, 0, 1], [1, 1, 1, 0]]),
             "cross": torch.tensor([[0.0, 1, 1, 1], [1, 0, 0, 1]])}
    unmasked = model(batch.src, batch.src_mask, batch.tgt_in).logits
    model.set_head_mask(masks)
    full = model(batch.src, batch.src_mask, batch.tgt_in).logits
    assert not torch.allclose(full, unmasked)
    torch.testing.assert_close(incremental_logits(model, batch), full, atol=1e-5, rtol=1e-4)
    g = greedy(model, batch.src, batch.src_mask, max_extra=6)
    b = beam_search(model, batch.src, batch.src_mask, beam=1, alpha=0.0, max_extra=6)
    assert [list(h[0].tokens) for h in b] == g
    model.set_head_mask(None)
    assert greedy(model, batch.src, batch.src_mask, max_extra=6) != g  # the masks changed the outputs


def test_gate_gradient_is_head_importance(model, batch):
    gates = {k: v.requires_grad_() for k, v in _ones(model).items()}
    model.set_head_mask(gates)
    model(batch.src, batch.src_mask, batch.tgt_in).logits.logsumexp(-1).sum().backward()
    for g in gates.values():
        assert g.grad is not None and g.grad.abs().min() > 0


def test_bad_head_mask_shape_is_rejected(model):
    with pytest.raises(ValueError, match=r"expected \(2, 4\)"):
        model.set_head_mask({"enc": torch.ones(3, 4)})
    with pytest.raises(ValueError, match="use enc, dec, cross"):
        model.set_head_mask({"encoder": torch.ones(2, 4)})
