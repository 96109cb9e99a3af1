"""Parameter counts by instantiating the real model on the meta device (no memory used)."""

from __future__ import annotations

import torch

from encdec.config import ModelConfig
from encdec.model import Transformer


def count(cfg: ModelConfig) -> dict:
    """Total and per-part parameter counts of the model `cfg` describes."""
    with torch.device("meta"):
        model = Transformer(cfg)

    def n(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    enc, dec = model.encoder[0], model.decoder[0]
    parts = {
        "embeddings (shared src/tgt/output)": n(model.embed),
        f"encoder ({cfg.n_enc_layers} layers)": n(model.encoder),
        f"decoder ({cfg.n_dec_layers} layers)": n(model.decoder),
        "final norms": n(model.enc_norm) + n(model.dec_norm),
        f"wiring ({cfg.wiring})": n(model.wiring),
    }
    per_layer = {
        "encoder layer": n(enc),
        "  self-attention": n(enc.self_attn),
        "  feed-forward": n(enc.ffn),
        "  layer norms": n(enc.norm1) + n(enc.norm2),
        "decoder layer": n(dec),
        "  self-attention ": n(dec.self_attn),
        "  cross-attention": n(dec.cross_attn),
        "  feed-forward ": n(dec.ffn),
        "  layer norms ": n(dec.norm1) + n(dec.norm2) + n(dec.norm3),
    }
    return {"total": n(model), "parts": parts, "per_layer": per_layer}


def cross_attention_flops(cfg: ModelConfig, src_len: int) -> dict:
    """Forward FLOPs (2 per multiply-add) of all decoder layers' cross-attention.

    per_target_token: query projection, scores over S' memory positions, weighted sum of values
    and output projection, summed over decoder layers (S' = src_len, or N*src_len for dense).
    per_source_sentence: what `start_decoding` does once per sentence: each layer's K/V
    projection of its memory, plus building the memories (the `mix` weighted sums, `dense`
    layer embeddings).
    """
    from encdec.wiring import memory_length_factor

    D, inner, n_dec, n_enc = cfg.d_model, cfg.inner_dim, cfg.n_dec_layers, cfg.n_enc_layers
    mem = src_len * memory_length_factor(cfg)
    per_token = n_dec * (2 * D * inner + 2 * mem * inner + 2 * mem * inner + 2 * inner * D)
    per_sentence = n_dec * 2 * mem * D * 2 * inner
    if cfg.wiring == "mix":
        per_sentence += n_dec * (n_enc + 1) * src_len * D * 2
    if cfg.wiring == "dense":
        per_sentence += n_enc * src_len * D
    return {"memory_positions": mem, "per_target_token": per_token, "per_source_sentence": per_sentence}
