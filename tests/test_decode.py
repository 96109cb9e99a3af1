import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from encdec.config import WIRINGS
from encdec.data.vocab import BOS, EOS
from encdec.decode import beam_search, greedy, length_penalty, top_candidates
from encdec.model import Transformer

from conftest import random_batch, tiny

# every wiring, and SurfaceFusion (its source-side K/V are memory rows of the cache too)
VARIANTS = [{"wiring": w} for w in WIRINGS] + [{"wiring": "dense", "surface_fusion": 0.2}]

A, B_ = 4, 5  # the two real tokens of the scripted model (vocabulary of 6)

# next-token probabilities given the tokens generated so far
SCRIPT = {
    (): {A: 0.6, B_: 0.4},
    (A,): {EOS: 0.3, A: 0.45, B_: 0.25},
    (B_,): {EOS: 0.9, A: 0.05, B_: 0.05},
}


@dataclass
class ScriptCache:
    history: torch.Tensor  # (B, t)

    @property
    def length(self):
        return self.history.size(1)

    def reorder(self, rows, memory=True, into=None):
        return ScriptCache(self.history.index_select(0, rows))


class ScriptedModel:
    """Hand-set probabilities: beam search must find exactly the hypotheses computed by hand."""

    def start_decoding(self, src, src_mask, capacity=0):
        return ScriptCache(torch.zeros(src.size(0), 0, dtype=torch.long))

    def decode_step(self, tokens, cache):
        hist = torch.cat([cache.history, tokens], 1)  # (B, t+1): BOS, y1, ..., yt
        logits = torch.full((tokens.size(0), 1, 6), float("-inf"))
        for r, h in enumerate(hist.tolist()):
            for tok, p in SCRIPT.get(tuple(h[1:]), {EOS: 1.0}).items():
                logits[r, 0, tok] = math.log(p)
        return logits, ScriptCache(hist)


def test_scripted_greedy():
    src = torch.ones(1, 3, dtype=torch.long)
    assert greedy(ScriptedModel(), src, src > 0) == [[A, A]]  # 0.6, then 0.45, then EOS


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_scripted_beam_search_returns_the_hand_computed_hypotheses(alpha):
    src = torch.ones(2, 3, dtype=torch.long)  # two identical sentences: batching must not mix them
    out = beam_search(ScriptedModel(), src, src > 0, beam=2, alpha=alpha, nbest=2)
    # step 2 candidates: b EOS .36, a a .27, a EOS .18, a b .15: "b" finishes (top K), "a EOS" is
    # 3rd (outside the top K = 2) so it never finishes; step 3: a a EOS .27 and a b EOS .15 finish,
    # and the best two of the three finished are kept
    lp_b = math.log(0.4) + math.log(0.9)
    lp_aa = math.log(0.6) + math.log(0.45)
    expected = [((B_,), lp_b / length_penalty(2, alpha), lp_b), ((A, A), lp_aa / length_penalty(3, alpha), lp_aa)]
    for sentence in out:
        assert [h.tokens for h in sentence] == [e[0] for e in expected]
        for h, (_, score, logprob) in zip(sentence, expected):
            assert h.score == pytest.approx(score, abs=1e-6)
            assert h.logprob == pytest.approx(logprob, abs=1e-6)


@pytest.mark.parametrize("K, V, block", [(4, 300, 64), (1, 50, 8), (3, 64, 64), (2, 7, 64)])
def test_top_candidates_equal_a_topk_over_all_sums(K, V, block):
    g = torch.Generator().manual_seed(K * V)
    B = 5
    scores = torch.randn(B, K, generator=g)
    scores[0, 1:] = float("-inf")  # dead beams
    logp = torch.randn(B * K, V, generator=g).round(decimals=1)  # ties within rows
    logp[3, :] = float("-inf")
    n = min(2 * K, K * V)
    values, beams, toks = top_candidates(scores, logp, n, block=block)
    ref_values, ref_idx = (scores.view(B * K, 1) + logp).view(B, K * V).topk(n, dim=1)
    torch.testing.assert_close(values, ref_values)
    # the same candidates (ties may come in another order): each returned (beam, token) has its value
    finite = values > float("-inf")
    got = scores.gather(1, beams) + logp.view(B, K, V)[torch.arange(B)[:, None], beams, toks]
    torch.testing.assert_close(got[finite], values[finite])
    assert bool((toks[finite] < V).all())
    for b in range(B):  # distinct candidates
        pairs = [(k, w) for k, w, f in zip(beams[b].tolist(), toks[b].tolist(), finite[b].tolist()) if f]
        assert len(set(pairs)) == len(pairs)


def test_length_penalty_values():
    assert length_penalty(1, 0.6) == 1.0
    assert length_penalty(7, 0.6) == pytest.approx(2.0**0.6)
    assert length_penalty(9, 0.0) == 1.0


@pytest.mark.parametrize("changes", VARIANTS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_beam_one_equals_greedy(changes):
    torch.manual_seed(1)
    model = Transformer(tiny(**changes)).eval()
    batch = random_batch(seed=3)
    g = greedy(model, batch.src, batch.src_mask, max_extra=6)
    b = beam_search(model, batch.src, batch.src_mask, beam=1, alpha=0.0, max_extra=6)
    assert [list(h[0].tokens) for h in b] == g


@pytest.mark.parametrize("wiring", ["final", "dense"])
def test_beam_hypotheses_score_what_the_model_says(wiring):
    """Each returned logprob equals the model's own full-forward log-probability of that output."""
    torch.manual_seed(2)
    model = Transformer(tiny(wiring=wiring)).eval()
    batch = random_batch(seed=4)
    out = beam_search(model, batch.src, batch.src_mask, beam=3, alpha=0.6, max_extra=5, nbest=3)
    for b, hyps in enumerate(out):
        assert len(hyps) == 3 and hyps[0].score >= hyps[1].score >= hyps[2].score
        for h in hyps:
            seq = torch.tensor([[BOS, *h.tokens]])
            keep = batch.src_mask[b : b + 1]
            logp = torch.log_softmax(model(batch.src[b : b + 1], keep, seq).logits, -1)[0]  # (T, V)
            target = [*h.tokens, EOS]
            total = sum(logp[i, tok].item() for i, tok in enumerate(target))
            assert h.logprob == pytest.approx(total, abs=1e-4)


def reference_beam_search(model, src, src_mask, beam, alpha, max_extra):
    """The documented rule, one sentence at a time, every hypothesis scored by a full forward pass:
    no cache, no batching, no shared memory, no vectorised bookkeeping."""
    out = []
    for b in range(src.size(0)):
        keep = src_mask[b : b + 1]
        limit = int(keep.sum()) + max_extra
        live, finished = [((), 0.0)], []
        for t in range(limit + 1):
            cands = []
            for toks, lp in live:
                logits = model(src[b : b + 1], keep, torch.tensor([[BOS, *toks]])).logits[0, -1]
                logp = torch.log_softmax(logits.double(), -1).tolist()
                words = [EOS] if t >= limit else range(len(logp))
                cands += [(lp + logp[w], toks, w) for w in words]
            cands = sorted(cands, key=lambda c: -c[0])[: 2 * beam]
            new_live = []
            for j, (s, toks, w) in enumerate(cands):
                if len(new_live) == beam:
                    break
                if w == EOS:
                    if j < beam:
                        finished.append((toks, s / length_penalty(len(toks) + 1, alpha), s))
                else:
                    new_live.append(((*toks, w), s))
            finished = sorted(finished, key=lambda h: -h[1])[:beam]
            if not new_live or (len(finished) >= beam and new_live[0][1] / length_penalty(t + 2, alpha)
                                <= finished[-1][1]):
                break
            live = new_live
        out.append(finished)
    return out


class EosProne(Transformer):
    """An untrained model rarely ends a sentence; this one gives EOS a bonus that varies with the
    decoder state, so hypotheses finish at many different steps."""

    def logits(self, y, surface=None):
        out = super().logits(y, surface)  # (B, T, V)
        return out + F.one_hot(torch.tensor(EOS), out.size(-1)) * (4.0 * y[..., :1] + 1.0)


@pytest.mark.parametrize("changes", VARIANTS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_batched_beam_search_equals_the_reference(changes):
    """The fast path (shared memory per sentence, reused cache buffers, vectorised steps, top-k on
    raw logits) finds exactly the hypotheses of the plain one-sentence-at-a-time search."""
    torch.manual_seed(5)
    model = EosProne(tiny(**changes)).eval()
    batch = random_batch(seed=6, n=5)
    fast = beam_search(model, batch.src, batch.src_mask, beam=3, alpha=0.6, max_extra=4, nbest=3)
    ref = reference_beam_search(model, batch.src, batch.src_mask, beam=3, alpha=0.6, max_extra=4)
    lengths = {len(h.tokens) for hyps in fast for h in hyps}
    assert len(lengths) >= 4  # finished at many steps, some at the length limit and some before
    for hyps, expected in zip(fast, ref):
        assert [h.tokens for h in hyps] == [e[0] for e in expected]
        for h, (_, score, logprob) in zip(hyps, expected):
            assert h.score == pytest.approx(score, abs=1e-4) and h.logprob == pytest.approx(logprob, abs=1e-4)


@pytest.mark.parametrize("wiring", ["final", "dense"])
def test_greedy_equals_the_reference(wiring):
    """Greedy search, whose finished sentences leave the batch, picks what one-sentence full passes pick."""
    torch.manual_seed(7)
    model = EosProne(tiny(wiring=wiring)).eval()
    batch = random_batch(seed=8, n=6)
    fast = greedy(model, batch.src, batch.src_mask, max_extra=4)
    ref = reference_beam_search(model, batch.src, batch.src_mask, beam=1, alpha=0.0, max_extra=4)
    assert len({len(f) for f in fast}) >= 3  # sentences end at different steps
    assert fast == [list(r[0][0]) for r in ref]


def test_outputs_stop_at_source_length_plus_max_extra():
    torch.manual_seed(0)
    model = Transformer(tiny()).eval()
    batch = random_batch()
    lengths = batch.src_mask.sum(1).tolist()
    for hyp, n in zip(greedy(model, batch.src, batch.src_mask, max_extra=2), lengths):
        assert len(hyp) <= n + 2
    for hyps, n in zip(beam_search(model, batch.src, batch.src_mask, beam=2, max_extra=2), lengths):
        assert len(hyps[0].tokens) <= n + 2


@pytest.mark.parametrize("beam", [1, 3])
def test_min_and_max_len_force_the_output_length(beam):
    torch.manual_seed(0)
    model = Transformer(tiny()).eval()
    batch = random_batch(seed=4)
    if beam == 1:
        outs = greedy(model, batch.src, batch.src_mask, min_len=7, max_len=7)
    else:
        outs = [list(h[0].tokens) for h in beam_search(model, batch.src, batch.src_mask, beam=beam, min_len=7,
                                                       max_len=7)]
    assert [len(o) for o in outs] == [7] * batch.src.size(0)
    short = greedy(model, batch.src, batch.src_mask, max_len=2)
    assert all(len(o) <= 2 for o in short)
