"""Parameter counts by instantiating the real model on the meta device (no memory used)."""

from __future__ import annotations

import torch
from torch import nn

from encdec.config import ModelConfig
from encdec.model import CrossAttention, FeedForward, SelfAttention, Transformer

# Published sizes, for the calculator's comparison column and tests/test_params.py.
PUBLISHED = {
    "transformer-base": (65e6, "Vaswani et al. 2017, Table 3"),
    "transformer-big": (213e6, "Vaswani et al. 2017, Table 3"),
    "bert-base": (110e6, "Devlin et al. 2019"),
    "bert-large": (340e6, "Devlin et al. 2019"),
    "gpt2-xl": (1542e6, "Radford et al. 2019, Table 2 (the '1.5B' model)"),
    "gpt3": (175e9, "Brown et al. 2020"),
}


def count(cfg: ModelConfig) -> dict:
    """Total and per-part parameter counts of the model `cfg` describes.

    `parts` splits the model by stack, `kinds` by what the parameters do (embeddings, attention,
    feed-forward, norms, other) and `per_layer` gives one layer of each stack; each of `parts`
    and `kinds` sums to `total`.
    """
    with torch.device("meta"):
        model = Transformer(cfg)

    def n(module: torch.nn.Module | None) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    parts = {
        "embeddings": n(model.embed) + n(getattr(model, "pos_embed", None)) + n(model.segment_embed)
        + n(model.embed_norm),
        f"encoder ({cfg.n_enc_layers} layers)": n(model.encoder),
        f"decoder ({cfg.n_dec_layers} layers)": n(model.decoder),
        "final norms": n(model.enc_norm) + n(model.dec_norm),
        f"wiring ({cfg.wiring})": n(model.wiring),
        "pooler": n(model.pooler),
        "output projection (untied)": n(model.out_proj),
        f"SurfaceFusion (lambda {cfg.surface_fusion})": n(model.surface),
    }
    kinds = {"embeddings": parts["embeddings"], "attention": 0, "feed-forward": 0, "norms": 0, "other": 0}
    for module in model.modules():
        if isinstance(module, SelfAttention | CrossAttention):
            kinds["attention"] += n(module)
        elif isinstance(module, FeedForward):
            kinds["feed-forward"] += n(module)
        elif isinstance(module, nn.LayerNorm) and module is not model.embed_norm:
            kinds["norms"] += n(module)
    kinds["other"] = n(model) - sum(kinds.values())  # wiring, pooler, untied output projection
    per_layer = {}
    if model.encoder:
        enc = model.encoder[0]
        per_layer.update({"encoder layer": n(enc), "  self-attention": n(enc.self_attn), "  feed-forward": n(enc.ffn),
                          "  layer norms": n(enc.norm1) + n(enc.norm2)})
        if enc.omega is not None:
            per_layer["  residual weights (Admin)"] = enc.omega.numel()
    if model.decoder:
        dec = model.decoder[0]
        per_layer.update({"decoder layer": n(dec), "  self-attention ": n(dec.self_attn),
                          "  cross-attention": n(dec.cross_attn), "  feed-forward ": n(dec.ffn),
                          "  layer norms ": n(dec.norm1) + n(dec.norm2) + n(dec.norm3)})
        if dec.omega is not None:
            per_layer["  residual weights (Admin) "] = dec.omega.numel()
    return {"total": n(model), "parts": {k: v for k, v in parts.items() if v or "layers" in k},
            "kinds": kinds, "per_layer": per_layer}


def cross_attention_flops(cfg: ModelConfig, src_len: int) -> dict:
    """Forward FLOPs (2 per multiply-add) of all decoder layers' cross-attention.

    per_target_token: query projection, scores over S' memory positions, weighted sum of values
    and output projection, summed over decoder layers (S' = src_len, or N*src_len for dense).
    per_source_sentence: what `start_decoding` does once per sentence: each layer's K/V
    projection of its memory, plus building the memories (the `mix` weighted sums, `dense`
    layer embeddings).
    """
    from encdec.wiring import memory_length_factor, memory_states

    D, inner, n_dec = cfg.d_model, cfg.inner_dim, cfg.n_dec_layers
    mem = src_len * memory_length_factor(cfg)
    per_token = n_dec * (2 * D * inner + 2 * mem * inner + 2 * mem * inner + 2 * inner * D)
    per_sentence = n_dec * 2 * mem * D * 2 * inner
    if cfg.wiring == "mix":
        per_sentence += n_dec * len(memory_states(cfg)) * src_len * D * 2
    if cfg.wiring == "dense":
        per_sentence += len(memory_states(cfg)) * src_len * D
    return {"memory_positions": mem, "per_target_token": per_token, "per_source_sentence": per_sentence}


def all_presets() -> list[dict]:
    """One row per preset: its total and by-kind counts beside the published size, if any."""
    from encdec.config import MODEL_PRESETS

    rows = []
    for name, m in MODEL_PRESETS.items():
        c = count(m)
        pub = PUBLISHED.get(name)
        rows.append({"preset": name, "kind": m.kind, "total": c["total"], **c["kinds"],
                     "published": pub[0] if pub else None, "source": pub[1] if pub else None,
                     "deviation": c["total"] / pub[0] - 1 if pub else None})
    return rows


def calculate(cfg: ModelConfig, preset_name: str, src_len: int) -> dict:
    """`count(cfg)`, plus the published size when `cfg` is the preset unchanged, plus the
    cross-attention FLOPs of its wiring for a source of `src_len` tokens (encoder-decoders)."""
    from encdec.config import MODEL_PRESETS

    result = count(cfg)
    pub = PUBLISHED.get(preset_name) if cfg == MODEL_PRESETS[preset_name] else None
    if pub:
        result["published"] = {"total": pub[0], "source": pub[1], "deviation": result["total"] / pub[0] - 1}
    if cfg.kind == "encoder-decoder":
        result["cross_attention_flops"] = {"src_len": src_len, **cross_attention_flops(cfg, src_len)}
    return result


def millions(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n:,.0f}"


def presets_table(rows: list[dict]):
    """`all_presets()` as a rich table."""
    from rich.table import Table

    table = Table(title="parameter counts (meta device) against the published sizes")
    for col in ("preset", "kind", "total", "embeddings", "attention", "feed-forward", "norms", "other",
                "published", "deviation"):
        table.add_column(col, justify="left" if col in ("preset", "kind") else "right")
    for r in rows:
        table.add_row(r["preset"], r["kind"], millions(r["total"]),
                      *(millions(r[k]) for k in ("embeddings", "attention", "feed-forward", "norms", "other")),
                      millions(r["published"]) if r["published"] else "",
                      f"{100 * r['deviation']:+.1f}%" if r["published"] else "")
    return table


def model_table(name: str, m: ModelConfig, result: dict):
    """`calculate(m, ...)` as a rich table: parts, one layer of each stack, kinds, total, published."""
    from rich.table import Table

    title = (f"{name} ({m.kind}): d_model {m.d_model}, {m.n_heads} heads x d_head {m.head_dim}, "
             f"d_ff {m.d_ff}, {m.n_enc_layers}+{m.n_dec_layers} layers, vocab {m.vocab_size}")
    table = Table(title=title, min_width=len(title))  # a title wider than the table would wrap mid-phrase
    table.add_column("part")
    table.add_column("parameters", justify="right")
    for part, v in {**result["parts"], **result["per_layer"]}.items():
        table.add_row(part, f"{v:,}")
    table.add_section()
    for kind, v in result["kinds"].items():
        table.add_row(f"by kind: {kind}", f"{v:,} ({100 * v / result['total']:.1f}%)")
    table.add_section()
    table.add_row("[bold]total", f"[bold]{result['total']:,} ({millions(result['total'])})")
    pub = result.get("published")
    if pub:
        table.add_row(f"published ({pub['source']})", f"{millions(pub['total'])} ({100 * pub['deviation']:+.1f}%)")
    return table
