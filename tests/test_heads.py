"""Head statistics on hand-built attention patterns, and roles from the documented thresholds."""

import math

import pytest
import torch

from encdec.analysis.heads import HeadStats, measure, punctuation_ids, role, table
from encdec.model import Transformer
from encdec.runtime import Runtime

from conftest import tiny

T = 10


def _add(kind, pattern, q_mask=None, k_eos=None, k_punct=None):
    """pattern (Tq, Tk) as one layer, one head, batch 1."""
    hs = HeadStats(kind)
    tq, tk = pattern.shape
    q_mask = torch.ones(1, tq, dtype=torch.bool) if q_mask is None else q_mask
    k_mask = torch.ones(1, tk, dtype=torch.bool)
    none = torch.zeros(1, tk, dtype=torch.bool)
    k_punct = none if k_punct is None else k_punct
    hs.add([pattern[None, None]], q_mask, k_mask, k_punct, none if k_eos is None else k_eos)
    return {k: float(v[0, 0]) for k, v in hs.means().items()}


def test_perfect_previous_token_head():
    w = torch.zeros(T, T)
    w[0, 0] = 1.0
    w[torch.arange(1, T), torch.arange(0, T - 1)] = 1.0
    s = _add("enc", w)
    assert s["prev"] == pytest.approx((T - 1) / T) and s["same"] == pytest.approx(1 / T) and s["next"] == 0
    assert s["entropy"] == pytest.approx(0.0, abs=1e-6)
    assert role(s, "enc") == "positional-prev"


def test_uniform_head():
    s = _add("enc", torch.full((T, T), 1 / T))
    assert s["entropy"] == pytest.approx(math.log(T), rel=1e-5)
    assert s["norm_entropy"] == pytest.approx(1.0, rel=1e-5)
    assert role(s, "enc") == "broad"


def test_causal_uniform_head_is_uniform_over_what_it_may_see():
    w = torch.tril(torch.ones(T, T))
    w = w / w.sum(-1, keepdim=True)
    s = _add("dec", w)
    assert s["norm_entropy"] == pytest.approx((T - 1) / T, rel=1e-5)  # the first query sees one key: 0


def test_padded_queries_do_not_count():
    w = torch.zeros(T, T)
    w[torch.arange(T), torch.arange(T)] = 1.0
    w[-3:] = 1 / T  # garbage rows at padded query positions
    q_mask = torch.ones(1, T, dtype=torch.bool)
    q_mask[0, -3:] = False
    s = _add("enc", w, q_mask=q_mask)
    assert s["same"] == pytest.approx(1.0) and s["entropy"] == pytest.approx(0.0, abs=1e-6)


def test_cross_attention_diagonal_and_sink_heads():
    S, Tq = 12, 6
    diag = torch.zeros(Tq, S)
    diag[torch.arange(Tq), (torch.arange(Tq) * (S - 1) / (Tq - 1)).round().long()] = 1.0
    s = _add("cross", diag)
    assert s["diagonal"] == pytest.approx(1.0) and role(s, "cross") == "alignment"
    sink = torch.zeros(Tq, S)
    sink[:, -1] = 1.0
    eos = torch.zeros(1, S, dtype=torch.bool)
    eos[0, -1] = True
    s = _add("cross", sink, k_eos=eos)
    assert s["eos"] == pytest.approx(1.0) and s["diagonal"] < 0.5 and role(s, "cross") == "eos-sink"


def test_cross_attention_mass_is_split_by_the_state_each_key_belongs_to():
    S, Tq = 5, 4  # dense over 2 states: keys 0..4 are state A's copy of the source, 5..9 state B's
    w = torch.zeros(Tq, 2 * S)
    w[0, 1] = 1.0  # all on state A
    w[1, S + 2] = 1.0  # all on state B
    w[2:, :S], w[2:, S:] = 0.25 / S, 0.75 / S  # spread: a quarter on A
    q_mask = torch.tensor([[True, True, True, False]])  # the last query is padding
    hs = HeadStats("cross")
    none = torch.zeros(1, 2 * S, dtype=torch.bool)
    hs.add([w[None, None]], q_mask, torch.ones(1, 2 * S, dtype=torch.bool), none, none, blocks=2)
    mass = hs.means()["state_mass"][0, 0]
    torch.testing.assert_close(mass, torch.tensor([1.25 / 3, 1.75 / 3]))


def test_punctuation_pieces():
    assert punctuation_ids(["<pad>", "▁,", ".", "▁the", "”.", "▁"]).tolist() == [False, True, True, False, True, False]


@pytest.mark.parametrize("wiring, states", [("final", None), ("dense", None), ("dense", (0, 3)), ("dense", (3,))])
def test_measure_on_a_model_gives_a_row_per_head(wiring, states):
    """Also dense over fewer states than encoder layers (`dense@0+3`: Z and the embeddings), whose
    keys are 2 blocks of the source, not 3."""
    torch.manual_seed(0)
    model = Transformer(tiny(wiring=wiring, n_enc_layers=3, memory_states=states)).eval()
    g = torch.Generator().manual_seed(0)
    pairs = [(torch.randint(4, 50, (n,), generator=g).tolist(), torch.randint(4, 50, (n + 1,), generator=g).tolist())
             for n in (3, 5, 8)]
    stats = measure(model, pairs, torch.zeros(50, dtype=torch.bool), Runtime.create("cpu", "fp32"))
    rows = table(stats)
    assert len(rows) == (3 + 2 + 2) * 4  # encoder, decoder, cross-attention layers x 4 heads
    for r in rows:
        assert 0 <= r["norm_entropy"] <= 1 + 1e-5 and 0 <= r["diagonal"] <= 1 and r["role"]
    mass = stats["cross"].means()["state_mass"]  # (L_dec, H, K)
    k = 1 if wiring == "final" else len(states or (1, 2, 3))
    assert mass.shape == (2, 4, k)
    torch.testing.assert_close(mass.sum(-1), torch.ones(2, 4))
