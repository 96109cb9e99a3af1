"""The Transformer of "Attention Is All You Need", top to bottom.

Shapes: B batch, S source length, T target length, S' memory length (S, or N*S for dense
wiring), D d_model, H heads, Dh head dim, I = H*Dh, F d_ff, V vocabulary, N encoder layers.
Masks are boolean, True = may attend (STYLE C5); only `attend` turns them into scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encdec.cache import DecoderCache, LayerCache
from encdec.config import ModelConfig
from encdec.wiring import Wiring


@dataclass
class ModelOutput:
    logits: Tensor  # (B, T, V)
    enc_self_attn: list[Tensor] | None  # per encoder layer (B, H, S, S), when return_attn
    dec_self_attn: list[Tensor] | None  # per decoder layer (B, H, T, T)
    cross_attn: list[Tensor] | None  # per decoder layer (B, H, T, S')


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, *, causal: bool, dropout: float,
           need_weights: bool) -> tuple[Tensor, Tensor | None]:
    """Scaled dot-product attention (paper eq. 1). q (B, H, Tq, Dh), k/v (B, H, Tk, Dh).

    mask broadcasts to (B, 1, Tq, Tk), True = may attend. `causal` adds the lower-triangular
    mask aligned to the end of the keys (so a single query at step t sees keys 0..t).
    With need_weights the explicit softmax path runs and returns weights (B, H, Tq, Tk);
    otherwise the fused SDPA kernel runs and weights are None.
    """
    tq, tk = q.size(2), k.size(2)
    if not need_weights and causal and mask is None and tq == tk:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True), None
    if causal and tq > 1:  # a single query at the end of the keys may see all of them
        mask = _causal(tq, tk, q.device) if mask is None else mask & _causal(tq, tk, q.device)
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout), None
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # (B, H, Tq, Tk)
    dropped = F.dropout(weights, p=dropout) if dropout > 0 else weights
    return dropped @ v, weights  # (B, H, Tq, Dh)


def _causal(tq: int, tk: int, device: torch.device) -> Tensor:
    # query i (absolute position tk - tq + i) may see keys 0 .. tk - tq + i
    return torch.ones(tq, tk, dtype=torch.bool, device=device).tril(diagonal=tk - tq)  # (Tq, Tk)


def _split_heads(x: Tensor, n_heads: int) -> Tensor:
    B, T, inner = x.shape
    return x.view(B, T, n_heads, inner // n_heads).transpose(1, 2)  # (B, H, T, Dh)


def _merge_heads(x: Tensor) -> Tensor:
    B, H, T, Dh = x.shape
    return x.transpose(1, 2).reshape(B, T, H * Dh)  # (B, T, I)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused Q/K/V projection."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.attn_dropout = cfg.n_heads, cfg.attn_dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.inner_dim)
        self.out = nn.Linear(cfg.inner_dim, cfg.d_model)

    def forward(self, x: Tensor, mask: Tensor | None, *, causal: bool, past: tuple[Tensor, Tensor] | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """x (B, T, D) -> (out (B, T, D), k (B, H, t+T, Dh), v, weights or None). `past` = cached (k, v)."""
        q, k, v = (_split_heads(t, self.n_heads) for t in self.qkv(x).chunk(3, dim=-1))  # (B, H, T, Dh) each
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, H, t+T, Dh)
            v = torch.cat([past[1], v], dim=2)
        p = self.attn_dropout if self.training else 0.0
        ctx, w = attend(q, k, v, mask, causal=causal, dropout=p, need_weights=need_weights)
        return self.out(_merge_heads(ctx)), k, v, w


class CrossAttention(nn.Module):
    """Multi-head attention from decoder queries to a memory; K/V in one fused projection."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.attn_dropout = cfg.n_heads, cfg.attn_dropout
        self.q = nn.Linear(cfg.d_model, cfg.inner_dim)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.inner_dim)
        self.out = nn.Linear(cfg.inner_dim, cfg.d_model)

    def project_memory(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """memory (B, S', D) -> k, v (B, H, S', Dh): done once per layer per source batch."""
        k, v = self.kv(memory).chunk(2, dim=-1)
        return _split_heads(k, self.n_heads), _split_heads(v, self.n_heads)

    def forward(self, y: Tensor, k: Tensor, v: Tensor, memory_mask: Tensor,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """y (B, T, D), k/v (B, H, S', Dh), memory_mask (B, S') -> (B, T, D), weights (B, H, T, S')."""
        q = _split_heads(self.q(y), self.n_heads)  # (B, H, T, Dh)
        p = self.attn_dropout if self.training else 0.0
        ctx, w = attend(q, k, v, memory_mask[:, None, None, :], causal=False, dropout=p, need_weights=need_weights)
        return self.out(_merge_heads(ctx)), w


class FeedForward(nn.Module):
    """Position-wise FFN(x) = max(0, x W1 + b1) W2 + b2 (paper eq. 2)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.d_model, cfg.d_ff)
        self.w2 = nn.Linear(cfg.d_ff, cfg.d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.relu(self.w1(x)))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pre = cfg.norm == "pre"
        self.self_attn = SelfAttention(cfg)
        self.ffn = FeedForward(cfg)
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """x (B, S, D), mask (B, 1, 1, S) -> (B, S, D)."""
        if self.pre:  # x + Sublayer(LayerNorm(x))
            a, _, _, w = self.self_attn(self.norm1(x), mask, causal=False, need_weights=need_weights)
            x = x + self.drop(a)
            return x + self.drop(self.ffn(self.norm2(x))), w
        # post-LN, as in the paper: LayerNorm(x + Sublayer(x))
        a, _, _, w = self.self_attn(x, mask, causal=False, need_weights=need_weights)
        x = self.norm1(x + self.drop(a))
        return self.norm2(x + self.drop(self.ffn(x))), w


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pre = cfg.norm == "pre"
        self.self_attn = SelfAttention(cfg)
        self.cross_attn = CrossAttention(cfg)
        self.ffn = FeedForward(cfg)
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.norm3 = nn.LayerNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, y: Tensor, cross_k: Tensor, cross_v: Tensor, memory_mask: Tensor,
                past: tuple[Tensor, Tensor] | None, need_weights: bool):
        """y (B, T, D) -> (y, self k, self v (B, H, t+T, Dh), self weights, cross weights)."""
        if self.pre:
            a, k, v, ws = self.self_attn(self.norm1(y), None, causal=True, past=past, need_weights=need_weights)
            y = y + self.drop(a)
            c, wc = self.cross_attn(self.norm2(y), cross_k, cross_v, memory_mask, need_weights)
            y = y + self.drop(c)
            return y + self.drop(self.ffn(self.norm3(y))), k, v, ws, wc
        a, k, v, ws = self.self_attn(y, None, causal=True, past=past, need_weights=need_weights)
        y = self.norm1(y + self.drop(a))
        c, wc = self.cross_attn(y, cross_k, cross_v, memory_mask, need_weights)
        y = self.norm2(y + self.drop(c))
        return self.norm3(y + self.drop(self.ffn(y))), k, v, ws, wc


def sinusoids(length: int, d_model: int) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/D)), PE(pos, 2i+1) = cos(...) (paper section 3.5). -> (length, D)"""
    pos = torch.arange(length, dtype=torch.float32)[:, None]  # (L, 1)
    inv = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv)[:, : d_model // 2]
    return pe


class Transformer(nn.Module):
    """Encoder-decoder Transformer with a shared source/target/output embedding."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.register_buffer("pos", sinusoids(cfg.max_len, cfg.d_model), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_dec_layers))
        self.wiring = Wiring(cfg)
        # pre-LN stacks end un-normalised; post-LN outputs are already normalised
        self.enc_norm = nn.LayerNorm(cfg.d_model) if cfg.norm == "pre" else nn.Identity()
        self.dec_norm = nn.LayerNorm(cfg.d_model) if cfg.norm == "pre" else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() == 2 and p is not self.embed.weight and p is not getattr(self.wiring, "layer_emb", None):
                nn.init.xavier_uniform_(p)
        # std D^-0.5, so the sqrt(D)-scaled embedding has unit scale (and the tied output layer stays small)
        nn.init.normal_(self.embed.weight, std=self.cfg.d_model**-0.5)

    def _embed(self, tokens: Tensor, offset: int = 0) -> Tensor:
        """tokens (B, T) -> (B, T, D): sqrt(D)-scaled embedding + sinusoid at positions offset.."""
        T = tokens.size(1)
        if offset + T > self.cfg.max_len:
            raise ValueError(f"sequence of length {offset + T} exceeds model.max_len={self.cfg.max_len}")
        x = self.embed(tokens) * math.sqrt(self.cfg.d_model) + self.pos[offset : offset + T].to(self.embed.weight.dtype)
        return self.drop(x)

    def encode(self, src: Tensor, src_mask: Tensor, need_weights: bool = False) -> tuple[list[Tensor], list[Tensor]]:
        """src (B, S) ids, src_mask (B, S) -> (states[0..N] each (B, S, D), self-attention weights).

        states[N] is the encoder output Z. Under pre-LN each state is returned through the final
        encoder LayerNorm, so every state a wiring scheme may read is normalised like Z.
        """
        mask = src_mask[:, None, None, :]  # (B, 1, 1, S)
        x = self._embed(src)
        states, weights = [x], []
        for layer in self.encoder:
            x, w = layer(x, mask, need_weights)
            states.append(x)
            weights.append(w)
        if self.cfg.norm == "pre":
            states = [self.enc_norm(s) for s in states]
        return states, weights

    def logits(self, y: Tensor) -> Tensor:
        """Decoder output (B, T, D) -> (B, T, V) through the tied embedding matrix."""
        return self.dec_norm(y) @ self.embed.weight.t()

    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor, return_attn: bool = False) -> ModelOutput:
        """src (B, S), src_mask (B, S) bool, tgt_in (B, T) -> ModelOutput with logits (B, T, V).

        Target padding needs no mask: it sits at the end and the causal mask hides it from
        every earlier position; the loss ignores the padded positions themselves.
        """
        states, enc_w = self.encode(src, src_mask, return_attn)
        memories, memory_mask = self.wiring(states, src_mask)
        y = self._embed(tgt_in)
        self_w, cross_w = [], []
        for layer, memory in zip(self.decoder, memories):
            k, v = layer.cross_attn.project_memory(memory)  # each layer has its own W_K, W_V
            y, _, _, ws, wc = layer(y, k, v, memory_mask, None, return_attn)
            self_w.append(ws)
            cross_w.append(wc)
        logits = self.logits(y)
        if not return_attn:
            return ModelOutput(logits, None, None, None)
        return ModelOutput(logits, enc_w, self_w, cross_w)

    @torch.no_grad()
    def start_decoding(self, src: Tensor, src_mask: Tensor) -> DecoderCache:
        """Run the encoder once and project each decoder layer's memory to cross K/V once."""
        states, _ = self.encode(src, src_mask)
        memories, memory_mask = self.wiring(states, src_mask)
        B, H = src.size(0), self.cfg.n_heads
        empty = torch.zeros(B, H, 0, self.cfg.head_dim, dtype=memories[0].dtype, device=src.device)  # (B, H, 0, Dh)
        layers = []
        for layer, memory in zip(self.decoder, memories):
            ck, cv = layer.cross_attn.project_memory(memory)
            layers.append(LayerCache(empty, empty, ck, cv))
        return DecoderCache(layers, memory_mask)

    @torch.no_grad()
    def decode_step(self, tokens: Tensor, cache: DecoderCache) -> tuple[Tensor, DecoderCache]:
        """tokens (B, 1) at position cache.length -> (logits (B, 1, V), cache one step longer)."""
        y = self._embed(tokens, offset=cache.length)
        new_layers = []
        for layer, c in zip(self.decoder, cache.layers):
            y, k, v, _, _ = layer(y, c.cross_k, c.cross_v, cache.memory_mask, (c.k, c.v), False)
            new_layers.append(LayerCache(k, v, c.cross_k, c.cross_v))
        return self.logits(y), DecoderCache(new_layers, cache.memory_mask)
