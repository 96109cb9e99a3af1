"""Which encoder states each decoder layer's cross-attention reads.

The encoder hands over `states[0..N]`, each (B, S, D): states[0] is the embedding output,
states[j] the output of encoder layer j, states[N] the final output Z. (Under pre-LN every
state has already been passed through the encoder's final LayerNorm, so all schemes read
normalised states, exactly as `final` reads the normalised Z.)

A scheme turns them into one memory per decoder layer plus the key mask for it:

- final     every decoder layer reads Z = states[N] (Vaswani et al. 2017; the same tensor object).
- layerwise decoder layer i reads states[layer_map[i]]; default map: proportional, the last
            decoder layer reads the last encoder layer.
- mix       decoder layer i reads sum_j softmax(w_i)_j * states[j] over j = 0..N
            (transparent attention, Bapna et al. 2018).
- dense     decoder layer i attends over states[1..N] at once: concatenated along the source
            axis (N*S positions), each plus a learned layer embedding.

Decoder layers never see which scheme is active.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from encdec.config import ModelConfig


def default_layer_map(n_enc: int, n_dec: int) -> tuple[int, ...]:
    """Proportional map, 1-based: decoder layer i reads encoder layer ceil(i * n_enc / n_dec).

    Equal depths give the identity; 6 enc / 3 dec gives (2, 4, 6); 3 enc / 6 dec (1, 1, 2, 2, 3, 3).
    """
    return tuple(math.ceil(i * n_enc / n_dec) for i in range(1, n_dec + 1))


def sources(cfg: ModelConfig, dec_layer: int) -> tuple[int, ...]:
    """Indices into states[0..N] that decoder layer `dec_layer` (0-based) depends on."""
    n = cfg.n_enc_layers
    if cfg.wiring == "final":
        return (n,)
    if cfg.wiring == "layerwise":
        layer_map = cfg.layer_map or default_layer_map(n, cfg.n_dec_layers)
        return (layer_map[dec_layer],)
    if cfg.wiring == "mix":
        return tuple(range(0, n + 1))
    if cfg.wiring == "dense":
        return tuple(range(1, n + 1))
    raise AssertionError(cfg.wiring)  # config validation rejects unknown schemes


def memory_length_factor(cfg: ModelConfig) -> int:
    """How many source positions per source token each cross-attention reads (dense: N)."""
    return cfg.n_enc_layers if cfg.wiring == "dense" else 1


class Wiring(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        n_enc, n_dec = cfg.n_enc_layers, cfg.n_dec_layers
        if cfg.wiring == "mix":
            # zeros: every layer starts with the uniform mix over states 0..N
            self.mix_logits = nn.Parameter(torch.zeros(n_dec, n_enc + 1))
        if cfg.wiring == "dense":
            self.layer_emb = nn.Parameter(torch.randn(n_enc, cfg.d_model) * cfg.d_model**-0.5)

    def mix_weights(self) -> Tensor:
        """(n_dec, n_enc + 1) softmax weights of the `mix` scheme; row i belongs to decoder layer i."""
        return torch.softmax(self.mix_logits, dim=-1)

    def forward(self, states: list[Tensor], src_mask: Tensor) -> tuple[list[Tensor], Tensor]:
        """states: N+1 tensors (B, S, D); src_mask (B, S) bool, True = real token.

        Returns (memories, memory_mask): n_dec tensors (B, S', D) and a (B, S') mask,
        S' = S, or N*S for `dense`.
        """
        cfg = self.cfg
        if cfg.wiring == "final":
            return [states[-1]] * cfg.n_dec_layers, src_mask
        if cfg.wiring == "layerwise":
            return [states[sources(cfg, i)[0]] for i in range(cfg.n_dec_layers)], src_mask
        if cfg.wiring == "mix":
            w = self.mix_weights().to(states[0].dtype)  # (n_dec, N+1)
            stacked = torch.stack(states, dim=0)  # (N+1, B, S, D)
            mixed = torch.einsum("ln,nbsd->lbsd", w, stacked)  # (n_dec, B, S, D)
            return list(mixed.unbind(0)), src_mask
        if cfg.wiring == "dense":
            layers = [s + e for s, e in zip(states[1:], self.layer_emb.to(states[0].dtype))]  # N x (B, S, D)
            memory = torch.cat(layers, dim=1)  # (B, N*S, D)
            return [memory] * cfg.n_dec_layers, src_mask.repeat(1, cfg.n_enc_layers)  # (B, N*S)
        raise AssertionError(cfg.wiring)
