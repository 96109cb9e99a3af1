"""The wiring proof: decoder layer i's cross-attention output depends on exactly the encoder
states its scheme wires to it (states[0] = embeddings, states[N] = final output Z)."""

import pytest
import torch

from encdec.config import NORMS, WIRINGS
from encdec.model import Transformer
from encdec.wiring import default_layer_map, sources

from conftest import random_batch, tiny

# (n_enc, n_dec, wiring) -> for each decoder layer, the set of encoder states it must read
EXPECTED = {
    (3, 3, "final"): [{3}, {3}, {3}],
    (3, 3, "layerwise"): [{1}, {2}, {3}],
    (3, 3, "mix"): [{0, 1, 2, 3}] * 3,
    (3, 3, "dense"): [{1, 2, 3}] * 3,
    (6, 3, "final"): [{6}, {6}, {6}],
    (6, 3, "layerwise"): [{2}, {4}, {6}],
    (6, 3, "mix"): [set(range(7))] * 3,
    (6, 3, "dense"): [set(range(1, 7))] * 3,
    (2, 4, "layerwise"): [{1}, {1}, {2}, {2}],
}


def reached_states(model: Transformer) -> list[set[int]]:
    """Per decoder layer, the encoder states (0 = embeddings .. N = Z) its cross-attention output
    has a nonzero gradient for. The chain between encoder layers is cut, so this asks which
    states each memory reads directly."""
    batch = random_batch()
    states, _ = model.encode(batch.src, batch.src_mask)
    states = [s.detach().requires_grad_() for s in states]
    memories, memory_mask = model.wiring(states, batch.src_mask)
    y = torch.randn(batch.src.size(0), 5, model.cfg.d_model)
    reached = []
    for i, layer in enumerate(model.decoder):
        k, v = layer.cross_attn.project_memory(memories[i])
        out, _ = layer.cross_attn(y, k, v, memory_mask)
        grads = torch.autograd.grad(out.sum(), states, allow_unused=True, retain_graph=True)
        reached.append({j for j, g in enumerate(grads) if g is not None and g.abs().sum() > 0})
    return reached


@pytest.mark.parametrize("n_enc, n_dec, wiring", list(EXPECTED))
@pytest.mark.parametrize("norm", NORMS)
def test_cross_attention_gradient_reaches_exactly_the_wired_layers(n_enc, n_dec, wiring, norm):
    torch.manual_seed(0)
    model = Transformer(tiny(n_enc_layers=n_enc, n_dec_layers=n_dec, wiring=wiring, norm=norm)).eval()
    assert reached_states(model) == EXPECTED[(n_enc, n_dec, wiring)]


def test_explicit_layer_map_is_used():
    torch.manual_seed(0)
    model = Transformer(tiny(n_enc_layers=3, n_dec_layers=2, wiring="layerwise", layer_map=(3, 1))).eval()
    batch = random_batch()
    states, _ = model.encode(batch.src, batch.src_mask)
    memories, _ = model.wiring(states, batch.src_mask)
    assert memories[0] is states[3] and memories[1] is states[1]


def test_final_reads_one_tensor_for_all_layers():
    model = Transformer(tiny(n_dec_layers=3)).eval()
    batch = random_batch()
    states, _ = model.encode(batch.src, batch.src_mask)
    memories, mask = model.wiring(states, batch.src_mask)
    assert all(m is states[-1] for m in memories) and mask is batch.src_mask


def test_dense_memory_spans_all_layers():
    model = Transformer(tiny(n_enc_layers=3, wiring="dense")).eval()
    batch = random_batch()
    out = model(batch.src, batch.src_mask, batch.tgt_in, return_attn=True)
    assert out.cross_attn[0].size(-1) == 3 * batch.src.size(1)


def test_mix_weights_are_a_distribution_per_decoder_layer():
    model = Transformer(tiny(n_enc_layers=3, n_dec_layers=2, wiring="mix"))
    w = model.wiring.mix_weights()
    assert w.shape == (2, 4)
    torch.testing.assert_close(w.sum(-1), torch.ones(2))
    torch.testing.assert_close(w, torch.full((2, 4), 0.25))  # starts as the uniform mix (not re-initialised)


def test_pre_ln_states_are_normalised_like_z():
    torch.manual_seed(0)
    model = Transformer(tiny(norm="pre", wiring="layerwise")).eval()
    batch = random_batch()
    states, _ = model.encode(batch.src, batch.src_mask)
    for s in states:  # fresh LayerNorm: zero mean, unit variance per position
        torch.testing.assert_close(s.mean(-1), torch.zeros(s.shape[:2]), atol=1e-5, rtol=0)
        torch.testing.assert_close(s.var(-1, unbiased=False), torch.ones(s.shape[:2]), atol=1e-3, rtol=0)


def test_default_layer_map():
    assert default_layer_map(6, 6) == (1, 2, 3, 4, 5, 6)
    assert default_layer_map(6, 3) == (2, 4, 6)
    assert default_layer_map(3, 6) == (1, 1, 2, 2, 3, 3)
    assert default_layer_map(6, 1) == (6,)


# every scheme of the table, with the default states and with chosen ones: the gradient reaches
# exactly the states the table declares (`wiring.sources`), so a new scheme is checked here too
VARIANTS = [(w, None) for w in WIRINGS] + [("dense", (0, 3)), ("dense", (3,)), ("mix", (0, 3)), ("mix", (0, 1, 3))]


@pytest.mark.parametrize("wiring, states", VARIANTS)
def test_every_scheme_reads_exactly_what_the_table_declares(wiring, states):
    torch.manual_seed(0)
    model = Transformer(tiny(n_enc_layers=3, n_dec_layers=2, wiring=wiring, memory_states=states)).eval()
    assert reached_states(model) == [set(sources(model.cfg, i)) for i in range(2)]
    if states is not None:
        assert set(sources(model.cfg, 0)) == set(states)


def test_dense_over_chosen_states_has_one_layer_embedding_and_memory_block_each():
    model = Transformer(tiny(n_enc_layers=3, wiring="dense", memory_states=(0, 3))).eval()
    batch = random_batch()
    assert model.wiring.layer_emb.shape == (2, 32)
    out = model(batch.src, batch.src_mask, batch.tgt_in, return_attn=True)
    assert out.cross_attn[0].size(-1) == 2 * batch.src.size(1)
    mix = Transformer(tiny(n_enc_layers=3, wiring="mix", memory_states=(0, 1, 3)))
    assert mix.wiring.mix_weights().shape == (2, 3)


@pytest.mark.parametrize("states, wiring, message", [
    ((), "dense", "reads nothing"),
    ((1, 1), "dense", "names a state twice"),
    ((0, 4), "mix", "out of range"),
    ((0, 3), "final", "used by the mix and dense"),
])
def test_memory_states_are_validated(states, wiring, message):
    with pytest.raises(ValueError, match=message):
        tiny(n_enc_layers=3, wiring=wiring, memory_states=states)
