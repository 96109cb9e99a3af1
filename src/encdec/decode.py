"""Greedy and beam search over `start_decoding` / `decode_step`, batched and incremental.

Both stop a sentence at source length + `max_extra` tokens (the paper: input length + 50), or
at `max_len` when given, by forcing end-of-sentence there; `min_len` forbids end-of-sentence
before that many tokens (with min_len = max_len every output has exactly that length, which is
how benchmarks make decoders do equal work).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from encdec.data.batching import bucket, encode_sources
from encdec.data.vocab import BOS, EOS, PAD


@dataclass(frozen=True)
class Hypothesis:
    tokens: tuple[int, ...]  # without BOS and EOS
    score: float  # log-probability / length_penalty
    logprob: float  # sum of token log-probabilities, EOS included


def length_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty lp(Y) = ((5 + |Y|) / 6)^alpha (Wu et al. 2016); |Y| counts EOS."""
    return ((5.0 + length) / 6.0) ** alpha


def _limits(src_mask: Tensor, max_extra: int, max_len: int | None) -> Tensor:
    limits = src_mask.sum(dim=1) + max_extra  # (B,) longest allowed output per sentence, EOS excluded
    return limits if max_len is None else limits.clamp(max=max_len)


@torch.inference_mode()
def greedy(model, src: Tensor, src_mask: Tensor, *, max_extra: int = 50, max_len: int | None = None,
           min_len: int = 0) -> list[list[int]]:
    """src (B, S) -> B token lists (no BOS/EOS)."""
    B = src.size(0)
    limits = _limits(src_mask, max_extra, max_len)  # (B,)
    cache = model.start_decoding(src, src_mask, capacity=int(limits.max()) + 1)
    tokens = torch.full((B, 1), BOS, dtype=torch.long, device=src.device)  # (B, 1)
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    out = []
    for t in range(int(limits.max()) + 1):
        logits, cache = model.decode_step(tokens, cache)  # (B, 1, V)
        if t < min_len:
            logits[:, -1, EOS] = float("-inf")
        nxt = logits[:, -1].argmax(dim=-1)  # (B,)
        nxt = torch.where(limits <= t, torch.full_like(nxt, EOS), nxt)
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        out.append(nxt)
        done |= nxt == EOS
        if bool(done.all()):
            break
        tokens = nxt[:, None]
    rows = torch.stack(out, dim=1).tolist()  # (B, steps)
    return [r[: r.index(EOS)] if EOS in r else r for r in rows]


@torch.inference_mode()
def beam_search(model, src: Tensor, src_mask: Tensor, *, beam: int, alpha: float = 0.6, max_extra: int = 50,
                nbest: int = 1, max_len: int | None = None, min_len: int = 0) -> list[list[Hypothesis]]:
    """Batched beam search; returns per sentence the `nbest` best hypotheses, best first.

    Each step expands the B*K live rows and takes the top 2K candidates per sentence; an EOS
    candidate among the top K is finished (score = logprob / `length_penalty`), the best K
    non-EOS candidates live on. A sentence is done when it has K finished hypotheses and its
    best live hypothesis, ending at the next step, would not beat the worst of them
    (Hugging Face's `early_stopping=False` rule), or when it reaches its length limit.
    With alpha = 0 and beam 1 this is exactly greedy search.
    """
    if beam < 1 or not 1 <= nbest <= beam:
        raise ValueError(f"beam={beam}, nbest={nbest}: need beam >= 1 and 1 <= nbest <= beam")
    B, K, dev = src.size(0), beam, src.device
    limits = _limits(src_mask, max_extra, max_len).tolist()
    cache = model.start_decoding(src, src_mask, capacity=max(limits) + 1)
    cache = cache.reorder(torch.arange(B, device=dev).repeat_interleave(K))
    scores = torch.full((B, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # only the first copy of each sentence starts alive
    history = torch.zeros(B * K, 0, dtype=torch.long, device=dev)  # (B*K, t)
    tokens = torch.full((B * K, 1), BOS, dtype=torch.long, device=dev)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    done = [False] * B
    for t in range(max(limits) + 1):
        logits, cache = model.decode_step(tokens, cache)  # (B*K, 1, V)
        logp = torch.log_softmax(logits[:, -1].float(), dim=-1)  # (B*K, V)
        if t < min_len:
            logp[:, EOS] = float("-inf")
        V = logp.size(-1)
        force = torch.tensor([lim <= t for lim in limits], device=dev).repeat_interleave(K)  # (B*K,)
        if bool(force.any()):
            eos_col = logp[:, EOS].clone()
            logp[force] = float("-inf")
            logp[force, EOS] = eos_col[force]
        cand = (scores.view(B * K, 1) + logp).view(B, K * V)  # (B, K*V)
        top_scores, top_idx = cand.topk(min(2 * K, K * V), dim=1)  # (B, 2K)
        top_scores, top_rows, top_tok = top_scores.tolist(), (top_idx // V).tolist(), (top_idx % V).tolist()
        new_scores = torch.full((B, K), float("-inf"), device=dev)
        rows = [b * K for b in range(B) for _ in range(K)]  # every row stays within its sentence's K rows
        toks = [PAD] * (B * K)
        for b in range(B):
            if done[b]:
                continue
            alive = 0
            for j, s in enumerate(top_scores[b]):
                if s == float("-inf") or alive == K:
                    break
                row, w = b * K + top_rows[b][j], top_tok[b][j]
                if w == EOS:
                    if j < K:
                        seq = tuple(history[row].tolist())
                        finished[b].append(Hypothesis(seq, s / length_penalty(len(seq) + 1, alpha), s))
                else:
                    new_scores[b, alive] = s
                    rows[b * K + alive], toks[b * K + alive] = row, w
                    alive += 1
            finished[b] = sorted(finished[b], key=lambda h: -h.score)[:K]
            if alive == 0:
                done[b] = True
            elif len(finished[b]) >= K:
                best_alive = float(new_scores[b, 0]) / length_penalty(t + 2, alpha)
                done[b] = best_alive <= finished[b][-1].score
        if all(done):
            break
        scores = new_scores
        rows_t = torch.tensor(rows, device=dev)
        cache = cache.reorder(rows_t, memory=False)  # rows stay within their sentence: same memory
        tokens = torch.tensor(toks, device=dev)[:, None]  # (B*K, 1)
        history = torch.cat([history.index_select(0, rows_t), tokens], dim=1)
    return [f[:nbest] for f in finished]


def translate_ids(model, sources: list[list[int]], rt, *, beam: int = 1, alpha: float = 0.6,
                  max_tokens: int = 6000, on_batch: Callable[[int], None] | None = None) -> list[list[int]]:
    """Decode source id lists in length-sorted batches; returns target ids in input order."""
    model.eval()
    out: list[list[int]] = [[] for _ in sources]
    budget = max(64, max_tokens // max(beam, 1))
    for idx in bucket([(len(s), len(s)) for s in sources], budget):
        src, mask = encode_sources([sources[i] for i in idx])
        src, mask = src.to(rt.device), mask.to(rt.device)
        with rt.autocast():
            if beam == 1:
                hyps = greedy(model, src, mask)
            else:
                hyps = [list(h[0].tokens) for h in beam_search(model, src, mask, beam=beam, alpha=alpha)]
        for i, h in zip(idx, hyps):
            out[i] = h
        if on_batch:
            on_batch(len(idx))
    return out
