"""Per-head statistics over a data set and head roles by documented thresholds.

For every head of every layer of each attention kind (enc, dec, cross), over all real
(non-padding) query positions:

- entropy      mean entropy of the head's attention distribution, in nats; `norm_entropy`
               divides by log(number of keys the query may see), so 1 = uniform
- prev/same/next  share of queries whose maximum weight falls on the key at relative position
               -1 / 0 / +1 (self-attention only; Voita et al. 2019's positional heads)
- punct        share of queries whose maximum goes to a punctuation piece
- eos          share of queries whose maximum goes to the end-of-sentence token (</s> of the
               source; for decoder self-attention, <s>, the only always-present key)
- diagonal     cross-attention only: share of queries whose maximum lies within +-2 source
               positions of the proportional diagonal j = i * (S - 1) / (T - 1) (monotone alignment)
- state_mass   cross-attention only, (L, H, K): the head's mean attention mass on each of the K
               encoder states its memory holds (dense wiring: one block of keys per state; else K = 1)

Roles (first that applies; thresholds are module constants):
  positional-prev/-same/-next   the share for that offset >= POSITIONAL (0.8)
  alignment                     cross-attention with diagonal >= ALIGNMENT (0.5)
  eos-sink                      eos >= SINK (0.5): the head mostly "parks" on </s> (or <s>)
  punctuation                   punct >= PUNCT (0.5)
  broad                         norm_entropy >= BROAD (0.8): close to uniform
  mixed                         none of the above
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from encdec.runtime import Runtime

POSITIONAL, ALIGNMENT, SINK, PUNCT, BROAD = 0.8, 0.5, 0.5, 0.5, 0.8
STATS = ("entropy", "norm_entropy", "prev", "same", "next", "punct", "eos", "diagonal")


@dataclass
class HeadStats:
    """Running sums for one attention kind: every stat is a (L, H) tensor of sums over queries."""

    kind: str
    sums: dict[str, Tensor] = field(default_factory=dict)
    queries: int = 0

    def add(self, weights: list[Tensor], q_mask: Tensor, k_mask: Tensor, k_punct: Tensor, k_eos: Tensor,
            blocks: int = 1) -> None:
        """weights: per layer (B, H, Tq, Tk); q_mask (B, Tq), k_mask (B, Tk), k_punct/k_eos (B, Tk) bool.

        blocks: the keys are `blocks` copies of one source (dense wiring over K states, Tk = K*S);
        positions are compared within a block.
        """
        w = torch.stack(weights).float()  # (L, B, H, Tq, Tk)
        L, B, H, Tq, Tk = w.shape
        q = q_mask[None, :, None, :].float()  # (1, B, 1, Tq)
        visible = k_mask[:, None, :].expand(B, Tq, Tk)  # (B, Tq, Tk)
        if self.kind == "dec":
            visible = visible & torch.ones(Tq, Tk, dtype=torch.bool, device=w.device).tril()
        n_visible = visible.sum(-1).float()  # (B, Tq)
        ent = -(w * torch.log(w.clamp(min=1e-12))).sum(-1)  # (L, B, H, Tq)
        norm = ent / torch.log(n_visible.clamp(min=2))[None, :, None, :]  # 1 = uniform over what it may see
        top = w.argmax(-1)  # (L, B, H, Tq) key index of each query's maximum
        pos = torch.arange(Tq, device=w.device)[None, None, None, :]  # (1, 1, 1, Tq)

        def share(hit: Tensor) -> Tensor:  # hit (L, B, H, Tq) bool -> (L, H) sums over real queries
            return (hit.float() * q).sum(dim=(1, 3))

        def at_top(flags: Tensor) -> Tensor:  # flags (B, Tk) -> (L, B, H, Tq): is each query's argmax key flagged
            return flags[None, :, None, None, :].expand(L, B, H, Tq, Tk).gather(-1, top[..., None])[..., 0]

        zeros = torch.zeros(L, H)
        stats = {"entropy": (ent * q).sum(dim=(1, 3)), "norm_entropy": (norm * q).sum(dim=(1, 3)),
                 "punct": share(at_top(k_punct)), "eos": share(at_top(k_eos))}
        if self.kind == "cross":
            S = Tk // blocks
            src_len = k_mask[:, :S].sum(-1).float()  # (B,)
            tgt_len = q_mask.sum(-1).float()  # (B,)
            slope = (src_len - 1) / (tgt_len - 1).clamp(min=1)  # (B,)
            diag = pos.float() * slope[None, :, None, None]  # (1, B, 1, Tq) expected source position
            per_state = w.view(L, B, H, Tq, blocks, S).sum(-1)  # (L, B, H, Tq, K) mass on each state's keys
            stats.update({"diagonal": share(((top % S).float() - diag).abs() <= 2),
                          "prev": zeros, "same": zeros, "next": zeros,
                          "state_mass": (per_state * q[..., None]).sum(dim=(1, 3))})  # (L, H, K)
        else:
            stats.update({"prev": share(top == pos - 1), "same": share(top == pos), "next": share(top == pos + 1),
                          "diagonal": zeros})
        for name, v in stats.items():
            self.sums[name] = self.sums.get(name, 0) + v.cpu()
        self.queries += int(q_mask.sum())

    def means(self) -> dict[str, Tensor]:
        return {name: v / max(self.queries, 1) for name, v in self.sums.items()}


def role(stats: dict[str, float], kind: str) -> str:
    """The documented role of one head from its mean statistics."""
    if kind != "cross":
        best = max(("prev", "same", "next"), key=lambda k: stats[k])
        if stats[best] >= POSITIONAL:
            return f"positional-{best}"
    if kind == "cross" and stats["diagonal"] >= ALIGNMENT:
        return "alignment"
    if stats["eos"] >= SINK:
        return "eos-sink"
    if stats["punct"] >= PUNCT:
        return "punctuation"
    if stats["norm_entropy"] >= BROAD:
        return "broad"
    return "mixed"


def table(all_stats: dict[str, HeadStats]) -> list[dict]:
    """One row per (kind, layer, head) with every mean statistic and the role."""
    rows = []
    for kind, hs in all_stats.items():
        means = hs.means()
        L, H = means["entropy"].shape
        for layer in range(L):
            for head in range(H):
                s = {name: float(means[name][layer, head]) for name in STATS}
                rows.append({"kind": kind, "layer": layer + 1, "head": head + 1, **s, "role": role(s, kind)})
    return rows


def punctuation_ids(pieces: list[str]) -> Tensor:
    """(V,) bool: pieces made only of punctuation once SentencePiece's word marker is removed."""
    import unicodedata

    def is_punct(p: str) -> bool:
        p = p.replace("\u2581", "")
        return bool(p) and all(unicodedata.category(ch).startswith("P") for ch in p)

    return torch.tensor([is_punct(p) for p in pieces], dtype=torch.bool)


@torch.no_grad()
def measure(model, pairs: list[tuple[list[int], list[int]]], punct: Tensor, rt: Runtime, *,
            max_tokens: int = 3000) -> dict[str, HeadStats]:
    """Teacher-forced attention over `pairs` (source ids, reference target ids) -> HeadStats per kind."""
    from encdec.data.batching import bucket, collate
    from encdec.data.vocab import BOS, EOS, PAD
    from encdec.wiring import memory_length_factor

    model.eval()
    blocks = memory_length_factor(model.cfg)
    stats = {kind: HeadStats(kind) for kind in ("enc", "dec", "cross")}
    punct = punct.to(rt.device)
    for idx in bucket([(len(s), len(t)) for s, t in pairs], max_tokens):
        b = collate([pairs[i] for i in idx]).to(rt.device)
        with rt.autocast():
            out = model(b.src, b.src_mask, b.tgt_in, return_attn=True)
        tgt_mask = b.tgt_out != PAD  # (B, T) real target positions (queries)
        src_punct = punct[b.src.clamp(max=punct.numel() - 1)] & b.src_mask
        stats["enc"].add(out.enc_self_attn, b.src_mask, b.src_mask, src_punct, b.src == EOS)
        in_mask = b.tgt_in != PAD
        stats["dec"].add(out.dec_self_attn, tgt_mask, in_mask, punct[b.tgt_in.clamp(max=punct.numel() - 1)] & in_mask,
                         b.tgt_in == BOS)
        rep = (1, blocks)
        stats["cross"].add(out.cross_attn, tgt_mask, b.src_mask.repeat(*rep), src_punct.repeat(*rep),
                           (b.src == EOS).repeat(*rep), blocks=blocks)
    return stats
