"""Head importance and pruning curves; gradient-norm collection against direct autograd."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch

from encdec.analysis import gradflow as G
from encdec.analysis import prune as P
from encdec.config import DataConfig, RunConfig, TrainConfig
from encdec.data.batching import collate
from encdec.data.vocab import PAD
from encdec.metrics import sequence_loss
from encdec.model import Transformer
from encdec.runtime import Runtime

from conftest import tiny

RT = Runtime.create("cpu", "fp32")


def _pairs(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(4, 50, (3 + i,), generator=g).tolist(), torch.randint(4, 50, (2 + i,), generator=g).tolist())
            for i in range(n)]


def test_a_head_that_contributes_nothing_has_zero_importance():
    torch.manual_seed(0)
    model = Transformer(tiny()).eval()
    dh = model.cfg.head_dim
    with torch.no_grad():
        model.decoder[1].cross_attn.out.weight[:, 2 * dh : 3 * dh] = 0.0
    imp = P.importance(model, _pairs(), RT, normalize=False)
    assert imp["cross"].shape == (2, 4)
    assert imp["cross"][1, 2] == 0 and (imp["cross"][0] > 0).all() and (imp["enc"] > 0).all()
    assert P.prune_order(imp["cross"])[0] == (1, 2)
    normed = P.importance(model, _pairs(), RT)
    torch.testing.assert_close(normed["enc"].norm(dim=-1), torch.ones(2))
    assert all(m.head_gate is None for m in model.modules() if hasattr(m, "head_gate"))  # gates removed after


def test_curve_prunes_the_requested_number_of_heads():
    torch.manual_seed(0)
    model = Transformer(tiny()).eval()
    imp = {k: torch.rand(2, 4) for k in P.KINDS}

    def zero_gates() -> float:
        return float(sum(int((m.head_gate == 0).sum()) for m in model.modules()
                         if getattr(m, "head_gate", None) is not None))

    rows = P.curve(model, imp, zero_gates, steps=4)
    for r in rows:
        assert r["score"] == r["heads_pruned"]
    assert [r["heads_pruned"] for r in rows if r["kind"] == "enc" and "variant" not in r] == [0, 2, 4, 6, 8]
    best = next(r for r in rows if r["kind"] == "cross" and "variant" in r)
    assert best["heads_pruned"] == 6  # one head per layer kept


def test_prunable_counts_heads_until_the_drop_exceeds_the_tolerance():
    rows = [{"kind": "enc", "heads_pruned": k, "score": s} for k, s in [(0, 20.0), (2, 19.8), (4, 19.6), (6, 18.0),
                                                                        (8, 19.9)]]
    assert P.prunable(rows, "enc", 0.5) == 4


def _grads_by_autograd(model, batch, params, smoothing):
    logits = model(batch.src, batch.src_mask, batch.tgt_in).logits
    loss, _, n = sequence_loss(logits, batch.tgt_out, pad_id=PAD, smoothing=smoothing)
    grads = torch.autograd.grad(loss / n, params)
    return math.sqrt(sum(float(g.pow(2).sum()) for g in grads))


def test_gradient_norms_match_autograd():
    torch.manual_seed(0)
    model = Transformer(tiny(wiring="mix")).train()
    batch = collate(_pairs())
    groups = G.groups(model)
    expected = {name: _grads_by_autograd(model, batch, params, 0.1) for name, params in groups.items()
                if name in ("enc1.self_attn", "dec2.cross_attn", "dec1", "emb", "wiring")}
    model.zero_grad()
    logits = model(batch.src, batch.src_mask, batch.tgt_in).logits
    loss, _, n = sequence_loss(logits, batch.tgt_out, pad_id=PAD, smoothing=0.1)
    (loss / n).backward()
    got = G.norms(model)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-5), name
    for prefix in ("enc1", "dec2"):  # the sublayers partition the layer
        parts = [v for k, v in got.items() if k.startswith(prefix + ".")]
        assert math.sqrt(sum(v * v for v in parts)) == pytest.approx(got[prefix], rel=1e-6)


def test_training_norms_undo_clipping():
    torch.manual_seed(0)
    model = Transformer(tiny())
    fresh = copy.deepcopy(model)
    pairs = _pairs()
    data = SimpleNamespace(train=pairs, train_batches=[list(range(len(pairs)))])
    cfg = RunConfig(model=model.cfg, data=DataConfig(vocab_size=50), train=TrainConfig(max_steps=1, clip_norm=1e-3))
    records = G.training_norms(model, data, cfg, RT, 1)
    fresh.train()
    direct = _grads_by_autograd(fresh, collate(pairs), list(fresh.encoder[0].parameters()), 0.1)
    assert records[0]["enc1"] == pytest.approx(direct, rel=1e-4)  # raw gradient, though clipped to 1e-3
    assert records[0]["grad_norm"] > 1e-2


def test_attention_over_residual_is_measured_on_real_tokens_and_follows_the_weights():
    """frozen_norms' enc{i}.attn/residual: mean |self-attention output| / mean |layer input| over
    real source tokens, per batch; scaling layer 2's output projection by 10 scales only its ratio."""
    torch.manual_seed(0)
    model = Transformer(tiny(n_enc_layers=2)).eval()
    pairs = _pairs()
    data = SimpleNamespace(train=pairs, train_batches=[list(range(len(pairs)))])
    cfg = RunConfig(model=model.cfg, data=DataConfig(vocab_size=50), train=TrainConfig(max_steps=1))
    got = G.frozen_norms(model, data, cfg, RT, 1, dropout=False)
    batch = collate(pairs)
    real = batch.src_mask  # (B, S): the padded positions must not count
    with torch.no_grad():
        x = model._embed(batch.src)
        a, _ = model.encoder[0].self_attn(x, batch.src_mask[:, None, None, :], causal=False, need_weights=False)
    direct = float(a.norm(dim=-1)[real].mean() / x.norm(dim=-1)[real].mean())
    assert got["enc1.attn/residual"] == pytest.approx(direct, rel=1e-4)
    with torch.no_grad():
        model.encoder[1].self_attn.out.weight.mul_(10)
        model.encoder[1].self_attn.out.bias.mul_(10)
    scaled = G.frozen_norms(model, data, cfg, RT, 1, dropout=False)
    assert scaled["enc1.attn/residual"] == pytest.approx(got["enc1.attn/residual"], rel=1e-6)
    assert scaled["enc2.attn/residual"] == pytest.approx(10 * got["enc2.attn/residual"], rel=1e-4)
    assert not model.encoder[0]._forward_pre_hooks  # the hooks are gone afterwards
