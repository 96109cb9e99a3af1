"""Greedy and beam search over `start_decoding` / `decode_step`, batched and incremental.

Both stop a sentence at source length + `max_extra` tokens (the paper: input length + 50), or
at `max_len` when given, by forcing end-of-sentence there; `min_len` forbids end-of-sentence
before that many tokens (with min_len = max_len every output has exactly that length, which is
how benchmarks make decoders do equal work).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from encdec.config import ALPHA
from encdec.data.batching import bucket, encode_sources
from encdec.data.vocab import BOS, EOS, PAD

if TYPE_CHECKING:
    from encdec.runtime import Runtime


@dataclass(frozen=True)
class Hypothesis:
    tokens: tuple[int, ...]  # without BOS and EOS
    score: float  # log-probability / length_penalty
    logprob: float  # sum of token log-probabilities, EOS included


def length_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty lp(Y) = ((5 + |Y|) / 6)^alpha (Wu et al. 2016); |Y| counts EOS."""
    return ((5.0 + length) / 6.0) ** alpha


def decoding(fn):
    """Run `fn(model, ...)` under inference mode, with the model's fast inference weights if it has
    them (a decoder needs only `start_decoding` and `decode_step`)."""

    @functools.wraps(fn)
    def run(model, *args, **kwargs):
        fast = getattr(model, "fast_inference", contextlib.nullcontext)
        with torch.inference_mode(), fast():
            return fn(model, *args, **kwargs)

    return run


MAX_EXTRA = 50  # output tokens beyond the source length (Vaswani et al. 2017, section 6.1)


def source_room(max_len: int, max_extra: int = MAX_EXTRA) -> int:
    """The longest source (tokens, EOS excluded) that a model of `max_len` positions decodes with
    its full output allowance: source + EOS on the encoder side, BOS + source + EOS + max_extra
    on the decoder side."""
    return max(1, max_len - 2 - max_extra)


def _limits(src_mask: Tensor, max_extra: int, max_len: int | None) -> Tensor:
    limits = src_mask.sum(dim=1) + max_extra  # (B,) longest allowed output per sentence, EOS excluded
    return limits if max_len is None else limits.clamp(max=max_len)


@decoding
def greedy(model, src: Tensor, src_mask: Tensor, *, max_extra: int = MAX_EXTRA, max_len: int | None = None,
           min_len: int = 0) -> list[list[int]]:
    """src (B, S) -> B token lists (no BOS/EOS). A sentence that ends leaves the batch."""
    B, dev = src.size(0), src.device
    limits = _limits(src_mask, max_extra, max_len)  # (B,)
    steps = int(limits.max()) + 1
    cache = model.start_decoding(src, src_mask, capacity=steps)
    out = torch.full((B, steps), PAD, dtype=torch.long, device=dev)  # (B, steps)
    ids = torch.arange(B, device=dev)  # (B',) the input sentence of each row still decoding
    tokens = torch.full((B, 1), BOS, dtype=torch.long, device=dev)  # (B', 1)
    for t in range(steps):
        logits, cache = model.decode_step(tokens, cache)  # (B', 1, V)
        if t < min_len:
            logits[:, -1, EOS] = float("-inf")
        nxt = logits[:, -1].argmax(dim=-1)  # (B',)
        nxt = torch.where(limits <= t, torch.full_like(nxt, EOS), nxt)
        out[ids, t] = nxt
        ended = nxt == EOS
        if bool(ended.all()):
            break
        if bool(ended.any()):
            keep = (~ended).nonzero().squeeze(1)  # (B'',)
            ids, limits, nxt, cache = ids[keep], limits[keep], nxt[keep], cache.reorder(keep)
        tokens = nxt[:, None]
    rows = out.tolist()
    return [r[: r.index(EOS)] if EOS in r else r for r in rows]


def top_candidates(scores: Tensor, logp: Tensor, n: int, block: int = 64) -> tuple[Tensor, Tensor, Tensor]:
    """The n best of scores[b, k] + logp[b*K + k, w] over (k, w), per sentence b, best first.

    scores (B, K), logp (B*K, V) -> values, beams k, tokens w, each (B, n). Exact, without
    forming the (B, K*V) sums: each row's vocabulary is cut into blocks of `block`, and a block
    holding one of the n best candidates is among the n blocks with the highest score + block
    maximum (every block ranked above it holds a better candidate). So only n blocks per sentence
    are searched, instead of a top-k over all B x K*V sums (timings: benchmarks/README.md).
    """
    B, K = scores.shape
    V = logp.size(-1)
    nb = -(-V // block)  # blocks per row
    if nb * block != V:
        logp = F.pad(logp, (0, nb * block - V), value=float("-inf"))
    blocks = logp.view(B * K, nb, block)  # (B*K, nb, block)
    best = (blocks.amax(dim=-1) + scores.view(B * K, 1)).view(B, K * nb)  # (B, K*nb) each block's best
    kb = min(n, K * nb)
    top_blocks = best.topk(kb, dim=1).indices  # (B, kb) over (beam, block)
    rows = torch.arange(B, device=logp.device)[:, None] * K + top_blocks // nb  # (B, kb) rows of logp
    cand = blocks[rows, top_blocks % nb] + scores.view(B * K)[rows][..., None]  # (B, kb, block)
    values, idx = cand.view(B, kb * block).topk(n, dim=1)  # (B, n)
    which = top_blocks.gather(1, idx // block)  # (B, n) the block each winner came from
    return values, which // nb, (which % nb) * block + idx % block


@decoding
def beam_search(model, src: Tensor, src_mask: Tensor, *, beam: int, alpha: float = ALPHA, max_extra: int = MAX_EXTRA,
                nbest: int = 1, max_len: int | None = None, min_len: int = 0) -> list[list[Hypothesis]]:
    """Batched beam search; returns per sentence the `nbest` best hypotheses, best first.

    Each step expands the B*K live rows and takes the top 2K candidates per sentence; an EOS
    candidate among the top K is finished (score = logprob / `length_penalty`), the best K
    non-EOS candidates live on. A sentence is done when it has K finished hypotheses and its
    best live hypothesis, ending at the next step, would not beat the worst of them
    (Hugging Face's `early_stopping=False` rule), or when it reaches its length limit.
    With alpha = 0 and beam 1 this is exactly greedy search.

    The K beams of a sentence share one copy of its memory (see `encdec.cache`), the candidates
    come from `top_candidates`, and sentences whose top K candidates hold no EOS (most of them at
    most steps) advance with tensor operations; only the others go through the bookkeeping loop
    in Python. A sentence that is done leaves the batch, so later steps do not decode it.
    """
    if beam < 1 or not 1 <= nbest <= beam:
        raise ValueError(f"beam={beam}, nbest={nbest}: need beam >= 1 and 1 <= nbest <= beam")
    B, K, dev = src.size(0), beam, src.device
    limits = _limits(src_mask, max_extra, max_len)  # (B,)
    force_rows = limits.repeat_interleave(K)  # (B*K,) the step at which each row must end
    max_steps = int(limits.max()) + 1
    cache = model.start_decoding(src, src_mask, capacity=max_steps)
    own = torch.arange(B, device=dev).repeat_interleave(K)  # (B*K,) each row's sentence
    cache = cache.reorder(own, memory=False)  # K beams per sentence, one memory row each
    spare = None  # the cache from before the last reorder: its buffers are reused by the next one
    scores = torch.full((B, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # only the first copy of each sentence starts alive
    history = torch.zeros(B * K, 0, dtype=torch.long, device=dev)  # (B*K, t)
    tokens = torch.full((B * K, 1), BOS, dtype=torch.long, device=dev)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]  # by input sentence
    ids = list(range(B))  # the input sentence of each sentence in the batch (finished ones leave it)
    done = [False] * B
    for t in range(max_steps):
        logits, cache = model.decode_step(tokens, cache)  # (B*K, 1, V)
        logp = torch.log_softmax(logits[:, -1].float(), dim=-1)  # (B*K, V)
        if t < min_len:
            logp[:, EOS] = float("-inf")
        force = force_rows <= t  # (B*K,)
        if bool(force.any()):
            eos_col = logp[:, EOS].clone()
            logp[force] = float("-inf")
            logp[force, EOS] = eos_col[force]
        top_scores, top_rows, top_tok = top_candidates(scores, logp, min(2 * K, K * logp.size(-1)))  # (B, 2K)
        # the common case, for every sentence at once: the top K candidates live on
        new_scores = top_scores[:, :K].clone()  # (B, K)
        rows = (torch.arange(B, device=dev)[:, None] * K + top_rows[:, :K]).view(-1)  # (B*K,)
        toks = top_tok[:, :K].reshape(-1).clone()  # (B*K,)
        simple = ((top_tok[:, :K] != EOS) & (top_scores[:, :K] > float("-inf"))).all(dim=1).tolist()
        special = [b for b in range(B) if not simple[b]]
        if special:
            ts, tr, tt = top_scores[special].tolist(), top_rows[special].tolist(), top_tok[special].tolist()
        for i, b in enumerate(special):
            new_scores[b] = float("-inf")
            rows[b * K : b * K + K] = b * K
            toks[b * K : b * K + K] = PAD
            alive = 0
            for j, s in enumerate(ts[i]):
                if s == float("-inf") or alive == K:
                    break
                row, w = b * K + tr[i][j], tt[i][j]
                if w == EOS:
                    if j < K:
                        seq = tuple(history[row].tolist())
                        finished[ids[b]].append(Hypothesis(seq, s / length_penalty(len(seq) + 1, alpha), s))
                else:
                    new_scores[b, alive] = s
                    rows[b * K + alive], toks[b * K + alive] = row, w
                    alive += 1
            finished[ids[b]] = sorted(finished[ids[b]], key=lambda h: -h.score)[:K]
            if alive == 0:
                done[b] = True
        best_alive = (new_scores[:, 0] / length_penalty(t + 2, alpha)).tolist()  # (B,) ending at the next step
        for b in range(B):
            if not done[b] and len(finished[ids[b]]) >= K:
                done[b] = best_alive[b] <= finished[ids[b]][-1].score
        if all(done):
            break
        scores = new_scores
        if any(done):  # finished sentences leave the batch, with their memory
            keep = torch.tensor([b for b in range(B) if not done[b]], device=dev)
            rows, toks = rows.view(B, K)[keep].view(-1), toks.view(B, K)[keep].view(-1)  # (B'*K,)
            scores, force_rows = scores[keep], force_rows.view(B, K)[keep].view(-1)
            ids = [ids[b] for b in keep.tolist()]
            B, done = len(ids), [False] * len(ids)
            cache, spare = cache.reorder(rows, memory=keep), None
        else:  # rows stay within their sentence: the memory is unchanged
            cache, spare = cache.reorder(rows, memory=False, into=spare), cache
        tokens = toks[:, None]  # (B*K, 1)
        history = torch.cat([history.index_select(0, rows), tokens], dim=1)
    return [f[:nbest] for f in finished]


@decoding
def translate_ids(model, sources: list[list[int]], rt: Runtime, *, beam: int = 1, alpha: float = ALPHA,
                  max_tokens: int = 6000, on_batch: Callable[[int], None] | None = None,
                  on_truncate: Callable[[int, int], None] | None = None) -> list[list[int]]:
    """Decode source id lists in length-sorted batches; returns target ids in input order.

    A source longer than the model can decode (`source_room`) is cut to fit, and
    `on_truncate(index, original length)` is told; outputs never run past the model's positions."""
    model.eval()
    max_len = model.cfg.max_len
    room = source_room(max_len)
    for i, s in enumerate(sources):
        if len(s) > room and on_truncate:
            on_truncate(i, len(s))
    sources = [s[:room] for s in sources]
    out: list[list[int]] = [[] for _ in sources]
    budget = max(64, max_tokens // max(beam, 1))
    for idx in bucket([(len(s), len(s)) for s in sources], budget):
        src, mask = encode_sources([sources[i] for i in idx])
        src, mask = src.to(rt.device), mask.to(rt.device)
        with rt.decode_autocast():
            if beam == 1:
                hyps = greedy(model, src, mask, max_len=max_len - 1)
            else:
                hyps = [list(h[0].tokens) for h in beam_search(model, src, mask, beam=beam, alpha=alpha,
                                                                max_len=max_len - 1)]
        for i, h in zip(idx, hyps):
            out[i] = h
        if on_batch:
            on_batch(len(idx))
    return out
