"""The decoding cache: an explicit value, passed into `decode_step` and returned from it.

Cross-attention K/V are computed once per decoder layer in `start_decoding`. Self-attention
K/V live in buffers preallocated along the time axis (grown by doubling when full), so a step
writes one position instead of concatenating the whole history. Beam search reorders rows with
`reorder` in one place.

A step writes into the buffers it was given: positions below a cache's `length` never change,
so an old cache stays valid for reading, but stepping the same cache twice lets the second step
overwrite the first one's new position. Branch with `reorder`, which copies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor


@dataclass
class LayerCache:
    k: Tensor  # (B, H, capacity, Dh) self-attention keys; positions < DecoderCache.length are filled
    v: Tensor  # (B, H, capacity, Dh)
    cross_k: Tensor  # (B, H, S', Dh) computed once from this layer's memory
    cross_v: Tensor  # (B, H, S', Dh)


@dataclass
class DecoderCache:
    layers: list[LayerCache]
    memory_mask: Tensor  # (B, S') bool, True = real source position
    length: int = 0  # target tokens already decoded (the next token's position)

    @property
    def batch_size(self) -> int:
        return self.memory_mask.size(0)

    @property
    def capacity(self) -> int:
        return self.layers[0].k.size(2) if self.layers else 0

    def reserve(self, n: int) -> DecoderCache:
        """A cache with room for `n` more tokens: self if there is, else one with buffers doubled."""
        need = self.length + n
        if need <= self.capacity:
            return self
        cap = max(need, 2 * self.capacity, 16)

        def grow(t: Tensor) -> Tensor:
            out = t.new_zeros(t.size(0), t.size(1), cap, t.size(3))  # (B, H, cap, Dh)
            out[:, :, : self.length] = t[:, :, : self.length]
            return out

        return replace(self, layers=[replace(c, k=grow(c.k), v=grow(c.v)) for c in self.layers])

    def reorder(self, rows: Tensor, *, memory: bool = True) -> DecoderCache:
        """Select (and repeat) batch rows into new buffers: row r of the result is row rows[r] of self.

        Only the filled positions of the self-attention buffers are copied. memory=False keeps the
        cross-attention K/V and the memory mask as they are: right when every row is replaced by a
        row of the same source sentence, as beam search does within a sentence's K rows.
        """

        def pick(t: Tensor) -> Tensor:
            return t.index_select(0, rows)

        def pick_filled(t: Tensor) -> Tensor:  # (B, H, capacity, Dh) -> (len(rows), H, capacity, Dh)
            out = t.new_empty((rows.numel(), *t.shape[1:]))
            torch.index_select(t[:, :, : self.length], 0, rows, out=out[:, :, : self.length])
            return out

        layers = [LayerCache(pick_filled(c.k), pick_filled(c.v), pick(c.cross_k) if memory else c.cross_k,
                             pick(c.cross_v) if memory else c.cross_v) for c in self.layers]
        return DecoderCache(layers, pick(self.memory_mask) if memory else self.memory_mask, self.length)


def empty_self_cache(batch: int, heads: int, capacity: int, head_dim: int, like: Tensor) -> Tensor:
    """A zeroed (B, H, capacity, Dh) buffer with `like`'s dtype and device."""
    return torch.zeros(batch, heads, capacity, head_dim, dtype=like.dtype, device=like.device)
