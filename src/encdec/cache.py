"""The decoding cache: an explicit value, passed into `decode_step` and returned from it.

Cross-attention K/V are computed once per decoder layer in `start_decoding`. Self-attention
K/V live in buffers preallocated along the time axis (grown by doubling when full), so a step
writes one position instead of concatenating the whole history. Beam search reorders rows with
`reorder` in one place.

The memory (cross K/V and its mask) may have fewer rows than the self-attention buffers: with
Bm memory rows and B = G * Bm decoder rows, rows G*i .. G*i+G-1 read memory row i. Beam search
keeps one copy of each sentence's memory for its K beams this way.

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
    cross_k: Tensor  # (Bm, H, S', Dh) computed once from this layer's memory; B is a multiple of Bm
    cross_v: Tensor  # (Bm, H, S', Dh)


@dataclass
class DecoderCache:
    layers: list[LayerCache]
    memory_mask: Tensor  # (Bm, S') bool, True = real source position
    length: int = 0  # target tokens already decoded (the next token's position)
    # SurfaceFusion's (k (Bm, 1, S, D), v, src_mask (Bm, S)) of the source embeddings, or None;
    # memory rows like the cross K/V
    surface: tuple[Tensor, Tensor, Tensor] | None = None

    @property
    def batch_size(self) -> int:
        """Decoder rows B (a multiple of the memory's rows Bm)."""
        return self.layers[0].k.size(0) if self.layers else self.memory_mask.size(0)

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

    def reorder(self, rows: Tensor, *, memory: bool | Tensor = True,
                into: DecoderCache | None = None) -> DecoderCache:
        """Select (and repeat) batch rows into new buffers: row r of the result is row rows[r] of self.

        Only the filled positions of the self-attention buffers are copied. memory=True selects the
        memory rows too (the memory must then have one row per decoder row). memory=False keeps the
        memory as it is: right when row r of the result reads the same memory row as before, as in
        beam search, where rows never leave their sentence (and the first reorder repeats each
        sentence into its K beams). A tensor of memory rows keeps just those: beam search drops
        finished sentences this way (their rows are left out of `rows`).

        `into`: an older cache of the same shapes whose self-attention buffers may be overwritten
        (it must not be used afterwards); saves allocating fresh buffers at every beam step.
        """
        if isinstance(memory, Tensor):
            memory_rows = memory
        elif memory:
            if self.memory_mask.size(0) != self.batch_size:
                raise ValueError(f"the memory has {self.memory_mask.size(0)} rows for {self.batch_size} decoder "
                                 "rows; reorder within memory groups with memory=False")
            memory_rows = rows
        else:
            memory_rows = None

        def pick(t: Tensor) -> Tensor:
            return t if memory_rows is None else t.index_select(0, memory_rows)

        def pick_filled(t: Tensor, spare: Tensor | None) -> Tensor:  # (B, H, cap, Dh) -> (len(rows), H, cap, Dh)
            shape = (rows.numel(), *t.shape[1:])
            out = spare if spare is not None and spare.shape == shape and spare is not t else t.new_empty(shape)
            torch.index_select(t[:, :, : self.length], 0, rows, out=out[:, :, : self.length])
            return out

        spares = into.layers if into is not None else [None] * len(self.layers)
        layers = [LayerCache(pick_filled(c.k, s and s.k), pick_filled(c.v, s and s.v), pick(c.cross_k), pick(c.cross_v))
                  for c, s in zip(self.layers, spares)]
        surface = None if self.surface is None else tuple(pick(t) for t in self.surface)
        return DecoderCache(layers, pick(self.memory_mask), self.length, surface)


def empty_self_cache(batch: int, heads: int, capacity: int, head_dim: int, like: Tensor) -> Tensor:
    """A zeroed (B, H, capacity, Dh) buffer with `like`'s dtype and device."""
    return torch.zeros(batch, heads, capacity, head_dim, dtype=like.dtype, device=like.device)
