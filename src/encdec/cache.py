"""The decoding cache: an explicit value, passed into `decode_step` and returned from it.

Cross-attention K/V are computed once per decoder layer in `start_decoding`; self-attention
K/V grow by one position per step. Beam search reorders rows with `reorder` in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class LayerCache:
    k: Tensor  # (B, H, t, Dh) self-attention keys of the t tokens decoded so far
    v: Tensor  # (B, H, t, Dh)
    cross_k: Tensor  # (B, H, S', Dh) computed once from this layer's memory
    cross_v: Tensor  # (B, H, S', Dh)


@dataclass
class DecoderCache:
    layers: list[LayerCache]
    memory_mask: Tensor  # (B, S') bool, True = real source position

    @property
    def length(self) -> int:
        """Number of target tokens already decoded (the next token's position)."""
        return self.layers[0].k.size(2)

    @property
    def batch_size(self) -> int:
        return self.memory_mask.size(0)

    def reorder(self, rows: Tensor) -> DecoderCache:
        """Select (and repeat) batch rows: row r of the result is row rows[r] of self."""

        def pick(t: Tensor) -> Tensor:
            return t.index_select(0, rows)

        layers = [LayerCache(pick(c.k), pick(c.v), pick(c.cross_k), pick(c.cross_v)) for c in self.layers]
        return DecoderCache(layers, pick(self.memory_mask))
