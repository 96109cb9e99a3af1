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
