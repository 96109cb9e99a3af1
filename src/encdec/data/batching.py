"""Length-bucketed batches under a token budget, so padding stays small."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from encdec.data.vocab import BOS, EOS, PAD


@dataclass
class Batch:
    src: Tensor  # (B, S) source ids ending in EOS, PAD-padded
    src_mask: Tensor  # (B, S) bool, True = real token
    tgt_in: Tensor  # (B, T) BOS + target
    tgt_out: Tensor  # (B, T) target + EOS

    @property
    def n_tokens(self) -> int:
        return int((self.tgt_out != PAD).sum())

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device, non_blocking=True) for t in (self.src, self.src_mask, self.tgt_in, self.tgt_out)))


def pad(seqs: list[list[int]]) -> Tensor:
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def collate(pairs: list[tuple[list[int], list[int]]]) -> Batch:
    src = pad([s + [EOS] for s, _ in pairs])
    return Batch(src, src != PAD, pad([[BOS] + t for _, t in pairs]), pad([t + [EOS] for _, t in pairs]))


def encode_sources(lines: list[list[int]]) -> tuple[Tensor, Tensor]:
    """Source id lists -> (src (B, S), src_mask (B, S)) with EOS appended, as in training."""
    src = pad([s + [EOS] for s in lines])
    return src, src != PAD


def bucket(lengths: list[tuple[int, int]], max_tokens: int) -> list[list[int]]:
    """Group example indices into batches of similar length.

    Examples are sorted by (source, target) length and packed greedily while
    rows * (longest side + 1) stays within max_tokens. Deterministic; a single example longer
    than the budget gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i][0], lengths[i][1], i))
    batches, cur, widest = [], [], 0
    for i in order:
        w = max(lengths[i]) + 1
        if cur and (len(cur) + 1) * max(widest, w) > max_tokens:
            batches.append(cur)
            cur, widest = [], 0
        cur.append(i)
        widest = max(widest, w)
    if cur:
        batches.append(cur)
    return batches


def epoch_order(n_batches: int, *, seed: int, epoch: int) -> list[int]:
    """The batch order of one epoch: a permutation that depends only on (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n_batches, generator=g).tolist()


def padding_fraction(batches: list[list[int]], lengths: list[tuple[int, int]]) -> float:
    """Share of padded positions over source and target tensors together."""
    real = total = 0
    for b in batches:
        s = [lengths[i][0] + 1 for i in b]
        t = [lengths[i][1] + 1 for i in b]
        real += sum(s) + sum(t)
        total += len(b) * (max(s) + max(t))
    return 1 - real / max(total, 1)
