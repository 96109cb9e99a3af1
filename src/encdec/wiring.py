"""Which encoder states each decoder layer's cross-attention reads.

The encoder hands over `states[0..N]`, each (B, S, D): states[0] is the embedding output,
states[j] the output of encoder layer j, states[N] the final output Z. (Under pre-LN every
state has already been passed through the encoder's final LayerNorm, so all schemes read
normalised states, exactly as `final` reads the normalised Z.)

A scheme turns them into one memory per decoder layer plus the key mask for it. The schemes are
one table, `SCHEMES` (name -> which states decoder layer i reads -> how its memory is built);
their names are `config.WIRINGS`, and the tests run every scheme in it:

- final     every decoder layer reads Z = states[N] (Vaswani et al. 2017; the same tensor object).
- layerwise decoder layer i reads states[layer_map[i]]; default map: proportional, the last
            decoder layer reads the last encoder layer.
- mix       decoder layer i reads sum_j softmax(w_i)_j * states[j] over the chosen states
            (`model.memory_states`, default 0..N: transparent attention, Bapna et al. 2018).
- dense     decoder layer i attends over the chosen states at once (default 1..N): concatenated
            along the source axis (len(states) * S positions), each plus a learned layer embedding.
            Over [N] it is `final` plus a layer embedding; over [0, N] "Z plus the source
            embeddings".

Decoder layers never see which scheme is active.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from encdec.config import WIRINGS, ModelConfig


def default_layer_map(n_enc: int, n_dec: int) -> tuple[int, ...]:
    """Proportional map, 1-based: decoder layer i reads encoder layer ceil(i * n_enc / n_dec).

    Equal depths give the identity; 6 enc / 3 dec gives (2, 4, 6); 3 enc / 6 dec (1, 1, 2, 2, 3, 3).
    """
    return tuple(math.ceil(i * n_enc / n_dec) for i in range(1, n_dec + 1))


def memory_states(cfg: ModelConfig) -> tuple[int, ...]:
    """The states `mix` and `dense` read: `model.memory_states`, else their defaults."""
    if cfg.memory_states is not None:
        return cfg.memory_states
    return tuple(range(0 if cfg.wiring == "mix" else 1, cfg.n_enc_layers + 1))


@dataclass(frozen=True)
class Scheme:
    reads: Callable[[ModelConfig, int], tuple[int, ...]]  # (cfg, decoder layer, 0-based) -> state indices
    build: Callable[[Wiring, list[Tensor], Tensor], tuple[list[Tensor], Tensor]]  # -> memories, memory mask
    memory_factor: Callable[[ModelConfig], int] = lambda cfg: 1  # memory positions per source token


def _final(w: Wiring, states: list[Tensor], src_mask: Tensor) -> tuple[list[Tensor], Tensor]:
    return [states[-1]] * w.cfg.n_dec_layers, src_mask


def _layerwise_reads(cfg: ModelConfig, i: int) -> tuple[int, ...]:
    return ((cfg.layer_map or default_layer_map(cfg.n_enc_layers, cfg.n_dec_layers))[i],)


def _layerwise(w: Wiring, states: list[Tensor], src_mask: Tensor) -> tuple[list[Tensor], Tensor]:
    return [states[_layerwise_reads(w.cfg, i)[0]] for i in range(w.cfg.n_dec_layers)], src_mask


def _mix(w: Wiring, states: list[Tensor], src_mask: Tensor) -> tuple[list[Tensor], Tensor]:
    weights = w.mix_weights().to(states[0].dtype)  # (n_dec, K) over the K chosen states
    stacked = torch.stack([states[j] for j in w.reads], dim=0)  # (K, B, S, D)
    mixed = torch.einsum("lk,kbsd->lbsd", weights, stacked)  # (n_dec, B, S, D)
    return list(mixed.unbind(0)), src_mask


def _dense(w: Wiring, states: list[Tensor], src_mask: Tensor) -> tuple[list[Tensor], Tensor]:
    emb = w.layer_emb.to(states[0].dtype)  # (K, D)
    memory = torch.cat([states[j] + e for j, e in zip(w.reads, emb)], dim=1)  # (B, K*S, D)
    return [memory] * w.cfg.n_dec_layers, src_mask.repeat(1, len(w.reads))  # (B, K*S)


SCHEMES: dict[str, Scheme] = {
    "final": Scheme(reads=lambda cfg, i: (cfg.n_enc_layers,), build=_final),
    "layerwise": Scheme(reads=_layerwise_reads, build=_layerwise),
    "mix": Scheme(reads=lambda cfg, i: memory_states(cfg), build=_mix),
    "dense": Scheme(reads=lambda cfg, i: memory_states(cfg), build=_dense,
                    memory_factor=lambda cfg: len(memory_states(cfg))),
}
assert tuple(SCHEMES) == WIRINGS, "config.Wiring and wiring.SCHEMES must name the same schemes"


def state_name(j: int) -> str:
    """How tables and labels name states[j]: "emb" for the embedding output, else "enc<j>"."""
    return "emb" if j == 0 else f"enc{j}"


def sources(cfg: ModelConfig, dec_layer: int) -> tuple[int, ...]:
    """Indices into states[0..N] that decoder layer `dec_layer` (0-based) depends on."""
    return SCHEMES[cfg.wiring].reads(cfg, dec_layer)


def memory_length_factor(cfg: ModelConfig) -> int:
    """How many source positions per source token each cross-attention reads (dense: one per state)."""
    return SCHEMES[cfg.wiring].memory_factor(cfg)


class Wiring(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.reads = memory_states(cfg) if cfg.wiring in ("mix", "dense") else ()
        if cfg.wiring == "mix":
            # zeros: every layer starts with the uniform mix over its states
            self.mix_logits = nn.Parameter(torch.zeros(cfg.n_dec_layers, len(self.reads)))
        if cfg.wiring == "dense":
            self.layer_emb = nn.Parameter(torch.randn(len(self.reads), cfg.d_model) * cfg.d_model**-0.5)

    def mix_weights(self) -> Tensor:
        """(n_dec, K) softmax weights of the `mix` scheme over its K states; row i: decoder layer i."""
        return torch.softmax(self.mix_logits, dim=-1)

    def forward(self, states: list[Tensor], src_mask: Tensor) -> tuple[list[Tensor], Tensor]:
        """states: N+1 tensors (B, S, D); src_mask (B, S) bool, True = real token.

        Returns (memories, memory_mask): n_dec tensors (B, S', D) and a (B, S') mask,
        S' = S, or K*S for `dense` over K states.
        """
        return SCHEMES[self.cfg.wiring].build(self, states, src_mask)
