"""The Transformer of "Attention Is All You Need", top to bottom.

Shapes: B batch, S source length, T target length, S' memory length (S, or N*S for dense
wiring), D d_model, H heads, Dh head dim, I = H*Dh, F d_ff, V vocabulary, N encoder layers.
Masks are boolean, True = may attend (../shared/STYLE.md C5); only `attend` turns them into scores.

Head masks: every attention module has a `head_gate` buffer (None, or (H,) weights) that scales
each head's context before the output projection; `Transformer.set_head_mask` fills them. A gate
of 0 removes the head exactly (pruning, Michel et al. 2019), and a gate that requires grad gives
the head importance |dL/dxi|. The gates are part of the model, so they act in training, full
decoding, incremental decoding and beam search alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encdec.cache import DecoderCache, LayerCache, empty_self_cache
from encdec.config import ModelConfig
from encdec.dropout import Dropout
from encdec.linear import InferenceWeights, Linear
from encdec.wiring import Wiring


@dataclass
class ModelOutput:
    logits: Tensor | None  # (B, T, V); None when forward(project=False)
    enc_self_attn: list[Tensor] | None  # per encoder layer (B, H, S, S), when return_attn
    dec_self_attn: list[Tensor] | None  # per decoder layer (B, H, T, T)
    cross_attn: list[Tensor] | None  # per decoder layer (B, H, T, S')
    hidden: Tensor | None = None  # (B, T, D) final decoder states, the output layer's input
    surface: Tensor | None = None  # (B, T, D) SurfaceFusion's source-side states (project=False, when enabled)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, *, causal: bool, dropout: float,
           need_weights: bool) -> tuple[Tensor, Tensor | None]:
    """Scaled dot-product attention (paper eq. 1). q (B, H, Tq, Dh), k/v (B, H, Tk, Dh).

    mask broadcasts to (B, 1, Tq, Tk), True = may attend. `causal` adds the lower-triangular
    mask aligned to the end of the keys (so a single query at step t sees keys 0..t).
    With need_weights the explicit softmax path runs and returns weights (B, H, Tq, Tk);
    otherwise the fused SDPA kernel runs and weights are None.
    """
    tq, tk = q.size(2), k.size(2)
    explicit = need_weights or _explicit_is_faster(q, tq, tk)
    if not explicit and causal and mask is None and tq == tk:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True), None
    if causal and tq > 1:  # a single query at the end of the keys may see all of them
        mask = _causal(tq, tk, q.device) if mask is None else mask & _causal(tq, tk, q.device)
    if not explicit:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout), None
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # (B, H, Tq, Tk)
    dropped = F.dropout(weights, p=dropout) if dropout > 0 else weights
    return dropped @ v, (weights if need_weights else None)  # (B, H, Tq, Dh)


def _explicit_is_faster(q: Tensor, tq: int, tk: int) -> bool:
    """Whether the explicit softmax path beats SDPA's fused kernel for this problem.

    Only in bf16 on a CPU: there torch 2.13's flash-attention kernel is slow at the short
    sequences of sentence-level translation, its backward most of all (2-core AMD EPYC with
    AVX512_BF16, 4 heads of 64, ~4k query tokens: forward + backward 18.9 ms fused vs 3.8 ms
    explicit at 32 x 32 positions, 33.7 vs 18.1 at 32 x 128, 26.1 vs 28.6 at 256 x 256; forward
    only 1.5 vs 0.6 at 32 x 32 and 0.7 vs 0.16 for one query over 32 keys, but 4.7 vs 7.0 at
    32 x 128). In fp32 the two are within 10% of each other, so fp32 keeps SDPA.
    """
    if q.device.type != "cpu" or q.dtype != torch.bfloat16:
        return False
    return tq == 1 or tk <= (192 if q.requires_grad else 64)


def _causal(tq: int, tk: int, device: torch.device) -> Tensor:
    # query i (absolute position tk - tq + i) may see keys 0 .. tk - tq + i
    return torch.ones(tq, tk, dtype=torch.bool, device=device).tril(diagonal=tk - tq)  # (Tq, Tk)


def _split_heads(x: Tensor, n_heads: int) -> Tensor:
    B, T, inner = x.shape
    return x.view(B, T, n_heads, inner // n_heads).transpose(1, 2)  # (B, H, T, Dh)


def _gate_heads(ctx: Tensor, gate: Tensor | None) -> Tensor:
    """ctx (B, H, T, Dh) scaled per head by gate (H,), if any."""
    return ctx if gate is None else ctx * gate.to(ctx.dtype)[None, :, None, None]


def _merge_heads(x: Tensor) -> Tensor:
    B, H, T, Dh = x.shape
    return x.transpose(1, 2).reshape(B, T, H * Dh)  # (B, T, I)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused Q/K/V projection."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.attn_dropout = cfg.n_heads, cfg.attn_dropout
        self.qkv = Linear(cfg.d_model, 3 * cfg.inner_dim)
        self.out = Linear(cfg.inner_dim, cfg.d_model)
        self.register_buffer("head_gate", None, persistent=False)  # (H,) or None; see the module docstring

    def forward(self, x: Tensor, mask: Tensor | None, *, causal: bool,
                past: tuple[Tensor, Tensor, int] | None = None, need_weights: bool = False
                ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, D) -> (out (B, T, D), weights or None).

        `past` = (k, v, t) while decoding: buffers (B, H, capacity, Dh) holding the keys and values of
        positions 0..t-1; this call writes positions t..t+T-1 into them and attends over 0..t+T-1.
        """
        q, k, v = (_split_heads(t, self.n_heads) for t in self.qkv(x).chunk(3, dim=-1))  # (B, H, T, Dh) each
        if past is not None:
            k_buf, v_buf, t = past
            end = t + k.size(2)
            k_buf[:, :, t:end] = k
            v_buf[:, :, t:end] = v
            k, v = k_buf[:, :, :end], v_buf[:, :, :end]  # (B, H, t+T, Dh)
        p = self.attn_dropout if self.training else 0.0
        ctx, w = attend(q, k, v, mask, causal=causal, dropout=p, need_weights=need_weights)
        return self.out(_merge_heads(_gate_heads(ctx, self.head_gate))), w


class CrossAttention(nn.Module):
    """Multi-head attention from decoder queries to a memory; K/V in one fused projection."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.attn_dropout = cfg.n_heads, cfg.attn_dropout
        self.q = Linear(cfg.d_model, cfg.inner_dim)
        self.kv = Linear(cfg.d_model, 2 * cfg.inner_dim)
        self.out = Linear(cfg.inner_dim, cfg.d_model)
        self.register_buffer("head_gate", None, persistent=False)  # (H,) or None

    def project_memory(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """memory (B, S', D) -> k, v (B, H, S', Dh): done once per layer per source batch."""
        k, v = self.kv(memory).chunk(2, dim=-1)
        return _split_heads(k, self.n_heads), _split_heads(v, self.n_heads)

    def forward(self, y: Tensor, k: Tensor, v: Tensor, memory_mask: Tensor,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """y (B, T, D), k/v (Bm, H, S', Dh), memory_mask (Bm, S') -> (B, T, D), weights (B, H, T, S').

        B = G * Bm: rows G*i .. G*i+G-1 share memory row i (the G beams of one sentence), so their
        queries are attended as G*T queries against one copy of the memory.
        """
        B, T, _ = y.shape
        G = B // k.size(0)
        if G * k.size(0) != B:
            raise ValueError(f"{B} decoder rows cannot share a memory of {k.size(0)} rows")
        q = _split_heads(self.q(y), self.n_heads)  # (B, H, T, Dh)
        if G > 1:
            q = q.unflatten(0, (-1, G)).transpose(1, 2).flatten(2, 3)  # (Bm, H, G*T, Dh)
        p = self.attn_dropout if self.training else 0.0
        ctx, w = attend(q, k, v, memory_mask[:, None, None, :], causal=False, dropout=p, need_weights=need_weights)
        if G > 1:
            ctx = ctx.unflatten(2, (G, T)).transpose(1, 2).flatten(0, 1)  # (B, H, T, Dh)
            w = None if w is None else w.unflatten(2, (G, T)).transpose(1, 2).flatten(0, 1)  # (B, H, T, S')
        return self.out(_merge_heads(_gate_heads(ctx, self.head_gate))), w


class FeedForward(nn.Module):
    """Position-wise FFN(x) = max(0, x W1 + b1) W2 + b2 (paper eq. 2); GELU instead of max(0, .) for BERT/GPT."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = Linear(cfg.d_model, cfg.d_ff)
        self.w2 = Linear(cfg.d_ff, cfg.d_model)
        self.act = F.gelu if cfg.activation == "gelu" else F.relu

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(self.act(self.w1(x)))


def deepnorm_coefficients(n_enc: int, n_dec: int) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """DeepNorm's (alpha, beta) for the encoder and the decoder stack (None for an absent stack).

    DeepNet (Wang et al. 2022, arXiv 2203.00555, Figure 2 and its table of constants; the same
    in its reference code, torchscale): a post-LN sublayer computes LN(alpha * x + G(x)), and the
    feed-forward, value and output projections start at beta times their Xavier initialisation.
    Encoder-decoder with N encoder and M decoder layers: encoder alpha = 0.81 (N^4 M)^(1/16),
    beta = 0.87 (N^4 M)^(-1/16); decoder alpha = (3M)^(1/4), beta = (12M)^(-1/4). One stack of
    L layers (encoder-only or decoder-only): alpha = (2L)^(1/4), beta = (8L)^(-1/4).
    """
    n, m = n_enc, n_dec
    if n and m:
        return (0.81 * (n**4 * m) ** (1 / 16), 0.87 * (n**4 * m) ** (-1 / 16)), ((3 * m) ** 0.25, (12 * m) ** -0.25)
    single = ((2 * (n or m)) ** 0.25, (8 * (n or m)) ** -0.25)
    return (single, None) if n else (None, single)


def _residual_alpha(cfg: ModelConfig, stack: int) -> float:
    """alpha of stack 0 (encoder) or 1 (decoder): DeepNorm's (norm deepnorm, deepnorm-alpha),
    else 1 (plain residual)."""
    if cfg.norm not in ("deepnorm", "deepnorm-alpha"):
        return 1.0
    return deepnorm_coefficients(cfg.n_enc_layers, cfg.n_dec_layers)[stack][0]


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pre = cfg.norm == "pre"
        self.alpha = _residual_alpha(cfg, 0)  # DeepNorm scales the residual; 1 for post/pre-LN
        # Admin: a learned weight per sublayer and dimension on the residual, set by `admin_init`
        self.omega = nn.Parameter(torch.ones(2, cfg.d_model)) if cfg.norm == "admin" else None
        self.self_attn = SelfAttention(cfg)
        self.ffn = FeedForward(cfg)
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """x (B, S, D), mask (B, 1, 1, S) -> (B, S, D)."""
        if self.pre:  # x + Sublayer(LayerNorm(x))
            a, w = self.self_attn(self.norm1(x), mask, causal=False, need_weights=need_weights)
            x = x + self.drop(a)
            return x + self.drop(self.ffn(self.norm2(x))), w
        # post-LN, as in the paper: LayerNorm(x + Sublayer(x)); DeepNorm: LayerNorm(alpha x + Sublayer(x));
        # Admin: LayerNorm(omega * x + Sublayer(x))
        a, w = self.self_attn(x, mask, causal=False, need_weights=need_weights)
        x = self.norm1(_residual(x, self.alpha, self.omega, 0) + self.drop(a))
        return self.norm2(_residual(x, self.alpha, self.omega, 1) + self.drop(self.ffn(x))), w


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pre = cfg.norm == "pre"
        self.alpha = _residual_alpha(cfg, 1)
        self.self_attn = SelfAttention(cfg)
        self.ffn = FeedForward(cfg)
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.norm3 = nn.LayerNorm(cfg.d_model)
        self.drop = Dropout(cfg.dropout)
        # decoder-only models (GPT) have no cross-attention sublayer
        self.cross_attn = CrossAttention(cfg) if cfg.n_enc_layers else None
        self.norm2 = nn.LayerNorm(cfg.d_model) if cfg.n_enc_layers else None
        # Admin's residual weights: self-attention (row 0), cross-attention (1), feed-forward (last)
        rows = 3 if cfg.n_enc_layers else 2
        self.omega = nn.Parameter(torch.ones(rows, cfg.d_model)) if cfg.norm == "admin" else None

    def forward(self, y: Tensor, cross_k: Tensor | None, cross_v: Tensor | None, memory_mask: Tensor | None,
                past: tuple[Tensor, Tensor, int] | None, need_weights: bool):
        """y (B, T, D) -> (y, self weights, cross weights); `past` as in SelfAttention.forward."""
        wc = None
        if self.pre:
            a, ws = self.self_attn(self.norm1(y), None, causal=True, past=past, need_weights=need_weights)
            y = y + self.drop(a)
            if self.cross_attn is not None:
                c, wc = self.cross_attn(self.norm2(y), cross_k, cross_v, memory_mask, need_weights)
                y = y + self.drop(c)
            return y + self.drop(self.ffn(self.norm3(y))), ws, wc
        a, ws = self.self_attn(y, None, causal=True, past=past, need_weights=need_weights)
        y = self.norm1(_residual(y, self.alpha, self.omega, 0) + self.drop(a))
        if self.cross_attn is not None:
            c, wc = self.cross_attn(y, cross_k, cross_v, memory_mask, need_weights)
            y = self.norm2(_residual(y, self.alpha, self.omega, 1) + self.drop(c))
        return self.norm3(_residual(y, self.alpha, self.omega, -1) + self.drop(self.ffn(y))), ws, wc


def _residual(x: Tensor, alpha: float, omega: Tensor | None, row: int) -> Tensor:
    """The residual term of post-LN sublayer `row`: x (post-LN), alpha x (DeepNorm) or omega[row] * x
    (Admin, omega (rows, D))."""
    if omega is not None:
        return x * omega[row].to(x.dtype)
    return x if alpha == 1.0 else alpha * x


@torch.no_grad()
def admin_init(model: Transformer, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> dict[str, list[float]]:
    """Admin's profiling initialisation of the residual weights (norm admin).

    Admin (Liu et al. 2020, "Understanding the Difficulty of Training Transformers", EMNLP, arXiv
    2004.08249, its reference code Transformer-Clinic `--init-type adaptive`): every post-LN
    sublayer computes LN(omega_i * x_i + f_i(x_i)), omega_i a learned vector, and in each stack
    omega_1 = 1, omega_i^2 = omega_(i-1)^2 Var[x_(i-1)] + Var[f_(i-1)(x_(i-1))]: the residual
    starts with as much weight as everything summed into it before, so no single sublayer's
    output dominates the next LayerNorm and the output's dependence on each sublayer stays
    bounded however deep the stack. The variances (over every element, as the reference code
    computes them) come from a forward pass over one batch, src (B, S), src_mask (B, S), tgt_in
    (B, T). Where this differs from the reference: the pass runs without dropout (the reference
    profiles with it), and since each omega changes the inputs of the sublayers after it, the
    pass repeats until no omega changes (one pass per sublayer at most) instead of setting them
    one by one inside a single pass. Returns the omegas per stack, in sublayer order.
    """
    stacks = {"encoder": [], "decoder": []}
    for layer in model.encoder:
        stacks["encoder"] += [(layer, 0, layer.self_attn), (layer, 1, layer.ffn)]
    for layer in model.decoder:
        cross = [(layer, 1, layer.cross_attn)] if layer.cross_attn is not None else []
        stacks["decoder"] += [(layer, 0, layer.self_attn), *cross, (layer, -1, layer.ffn)]
    sublayers = [entry for stack in stacks.values() for entry in stack]
    if not sublayers or any(layer.omega is None for layer, _, _ in sublayers):
        raise ValueError(f"admin_init needs a model with model.norm=admin, not {model.cfg.norm}")
    variances: dict[nn.Module, tuple[float, float]] = {}

    def record(module: nn.Module, args: tuple, output: Tensor | tuple) -> None:
        out = output[0] if isinstance(output, tuple) else output  # attention returns (output, weights)
        variances[module] = (args[0].float().var().item(), out.float().var().item())

    hooks = [module.register_forward_hook(record) for _, _, module in sublayers]
    was_training = model.training
    model.eval()
    try:
        for layer, row, _ in sublayers:
            layer.omega[row].fill_(1.0)
        for _ in range(len(sublayers) + 1):
            model(src, src_mask, tgt_in)
            settled = True
            for stack in stacks.values():
                omega = 1.0
                for layer, row, module in stack:
                    settled &= math.isclose(layer.omega[row, 0].item(), omega, rel_tol=1e-5)
                    layer.omega[row].fill_(omega)
                    var_in, var_out = variances[module]
                    omega = math.sqrt(omega**2 * var_in + var_out)
            if settled:
                break
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return {name: [layer.omega[row, 0].item() for layer, row, _ in stack] for name, stack in stacks.items()}


class SurfaceFusion(nn.Module):
    """SurfaceFusion (Liu et al. 2021, "Understanding and Improving Encoder Layer Fusion in
    Sequence-to-Sequence Learning", ICLR; the released code's `--surfacefusion att --sf-mode hard`):
    the top decoder state attends with one head over the source token embeddings (scaled like the
    model's input, no positions), a feed-forward layer turns that into source-side states, the
    shared output projection gives p_src, and the two distributions are fused hard:

        log p = log_softmax((1 - lambda) log p_dec + lambda log p_src)      (`fuse`)

    lambda = model.surface_fusion (the paper's setting: 0.2, its --sf-gate 0.8 on p_dec). Where
    the paper leaves a choice, this implements: the attention is a CrossAttention with one head of
    d_model dimensions (its own output projection), the feed-forward layer is the model's
    FeedForward (d_ff), and the fused distribution is renormalised (a weighted geometric mean of
    two distributions sums to less than one)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.lam = cfg.surface_fusion
        self.attn = CrossAttention(replace(cfg, n_heads=1, d_head=cfg.d_model, surface_fusion=0.0))
        self.ffn = FeedForward(cfg)

    def forward(self, y: Tensor, k: Tensor, v: Tensor, src_mask: Tensor) -> Tensor:
        """y (B, T, D) top decoder states, k/v (Bm, 1, S, D) from `attn.project_memory(source
        embeddings)`, src_mask (Bm, S) -> source-side states (B, T, D)."""
        context, _ = self.attn(y, k, v, src_mask)
        return self.ffn(context)

    def fuse(self, dec_logits: Tensor, src_logits: Tensor) -> Tensor:
        """(..., V) logits of both sides -> (..., V) log-probabilities of the fused distribution."""
        mixed = (1 - self.lam) * torch.log_softmax(dec_logits.float(), -1) + self.lam * torch.log_softmax(
            src_logits.float(), -1)
        return torch.log_softmax(mixed, -1)


def sinusoids(length: int, d_model: int) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/D)), PE(pos, 2i+1) = cos(...) (paper section 3.5). -> (length, D)"""
    pos = torch.arange(length, dtype=torch.float32)[:, None]  # (L, 1)
    inv = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv)[:, : d_model // 2]
    return pe


class Transformer(nn.Module):
    """Encoder-decoder Transformer with a shared source/target/output embedding.

    With n_dec_layers=0 it is an encoder-only stack (`encode`, `pool`), with n_enc_layers=0 a
    decoder-only language model (`forward(None, None, tokens)`); those exist for the parameter
    calculator and its tests. Training, decoding and analysis need both stacks.
    """

    output_fast: InferenceWeights | None = None  # the tied output layer inside fast_inference()

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        if cfg.positions == "learned":
            self.pos_embed = nn.Embedding(cfg.max_len, cfg.d_model)
        else:
            self.register_buffer("pos", sinusoids(cfg.max_len, cfg.d_model), persistent=False)
        self.segment_embed = nn.Embedding(cfg.n_segments, cfg.d_model) if cfg.n_segments else None
        self.embed_norm = nn.LayerNorm(cfg.d_model) if cfg.embed_norm else None
        self.drop = Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_dec_layers))
        self.wiring = Wiring(cfg)
        # pre-LN stacks end un-normalised; post-LN outputs are already normalised
        pre = cfg.norm == "pre"
        self.enc_norm = nn.LayerNorm(cfg.d_model) if pre and cfg.n_enc_layers else nn.Identity()
        self.dec_norm = nn.LayerNorm(cfg.d_model) if pre and cfg.n_dec_layers else nn.Identity()
        self.pooler = Linear(cfg.d_model, cfg.d_model) if cfg.pooler else None
        self.surface = SurfaceFusion(cfg) if cfg.surface_fusion > 0 else None
        untied = cfg.n_dec_layers and not cfg.tie_output
        self.out_proj = Linear(cfg.d_model, cfg.vocab_size, bias=False) if untied else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            if name.endswith(".omega"):  # Admin's residual weights: 1 until `admin_init` profiles them
                nn.init.ones_(p)
            elif p.dim() == 2 and not name.startswith(("embed.", "wiring.")):  # wiring inits its own
                nn.init.xavier_uniform_(p)
        # std D^-0.5, so the sqrt(D)-scaled embedding has unit scale (and the tied output layer stays small)
        nn.init.normal_(self.embed.weight, std=self.cfg.d_model**-0.5)
        if self.cfg.norm in ("deepnorm", "deepnorm-beta"):
            self._deepnorm_init()

    @torch.no_grad()
    def _deepnorm_init(self) -> None:
        """DeepNorm's beta (norm deepnorm, deepnorm-beta): the feed-forward, value and output
        projections of every attention (self and cross) start at beta times their Xavier
        initialisation; queries and keys keep theirs (Wang et al. 2022, `deepnorm_coefficients`)."""
        inner = self.cfg.inner_dim
        coeffs = deepnorm_coefficients(self.cfg.n_enc_layers, self.cfg.n_dec_layers)
        for layers, c in ((self.encoder, coeffs[0]), (self.decoder, coeffs[1])):
            for layer in layers:
                beta = c[1]
                layer.self_attn.qkv.weight[2 * inner :].mul_(beta)  # (3I, D): the rows of V
                layer.self_attn.out.weight.mul_(beta)
                layer.ffn.w1.weight.mul_(beta)
                layer.ffn.w2.weight.mul_(beta)
                if getattr(layer, "cross_attn", None) is not None:
                    layer.cross_attn.kv.weight[inner:].mul_(beta)  # (2I, D): the rows of V
                    layer.cross_attn.out.weight.mul_(beta)

    def set_head_mask(self, mask: dict[str, Tensor] | None) -> None:
        """Gate heads: mask["enc"] (n_enc, H), mask["dec"] (n_dec, H), mask["cross"] (n_dec, H).

        Missing keys and mask=None leave those heads ungated (1). Rows are used as given, so a
        tensor that requires grad collects dL/dgate (head importance).
        """
        mask = mask or {}
        unknown = set(mask) - {"enc", "dec", "cross"}
        if unknown:
            raise ValueError(f"head mask keys {sorted(unknown)}; use enc, dec, cross")
        groups = {"enc": [layer.self_attn for layer in self.encoder],
                  "dec": [layer.self_attn for layer in self.decoder],
                  "cross": [layer.cross_attn for layer in self.decoder if layer.cross_attn is not None]}
        for key, modules in groups.items():
            m = mask.get(key)
            if m is not None and tuple(m.shape) != (len(modules), self.cfg.n_heads):
                raise ValueError(f"head mask {key!r} has shape {tuple(m.shape)}; "
                                 f"expected ({len(modules)}, {self.cfg.n_heads})")
            for i, module in enumerate(modules):
                module.head_gate = None if m is None else m[i]

    def _embed(self, tokens: Tensor, offset: int = 0, segments: Tensor | None = None) -> Tensor:
        """tokens (B, T) -> (B, T, D): sqrt(D)-scaled embedding + position offset.. (+ segment)."""
        T = tokens.size(1)
        if offset + T > self.cfg.max_len:
            raise ValueError(f"sequence of length {offset + T} exceeds model.max_len={self.cfg.max_len}")
        pos = self.pos_embed.weight if self.cfg.positions == "learned" else self.pos
        x = self.embed(tokens) * math.sqrt(self.cfg.d_model) + pos[offset : offset + T].to(self.embed.weight.dtype)
        if self.segment_embed is not None:
            x = x + self.segment_embed(torch.zeros_like(tokens) if segments is None else segments)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        return self.drop(x)

    def encode(self, src: Tensor, src_mask: Tensor, need_weights: bool = False,
               segments: Tensor | None = None) -> tuple[list[Tensor], list[Tensor]]:
        """src (B, S) ids, src_mask (B, S) -> (states[0..N] each (B, S, D), self-attention weights).

        states[N] is the encoder output Z. Under pre-LN each state is returned through the final
        encoder LayerNorm, so every state a wiring scheme may read is normalised like Z.
        """
        if not self.encoder:
            raise ValueError("this model has no encoder (model.n_enc_layers=0)")
        mask = src_mask[:, None, None, :]  # (B, 1, 1, S)
        x = self._embed(src, segments=segments)
        states, weights = [x], []
        for layer in self.encoder:
            x, w = layer(x, mask, need_weights)
            states.append(x)
            weights.append(w)
        if self.cfg.norm == "pre":
            states = [self.enc_norm(s) for s in states]
        return states, weights

    def pool(self, z: Tensor) -> Tensor:
        """BERT's pooler: encoder output (B, S, D) -> tanh(W z[:, 0] + b) (B, D)."""
        if self.pooler is None:
            raise ValueError("this model has no pooler (model.pooler=false)")
        return torch.tanh(self.pooler(z[:, 0]))

    @property
    def output_weight(self) -> Tensor:
        """(V, D): the tied embedding matrix, or out_proj's own."""
        return self.out_proj.weight if self.out_proj is not None else self.embed.weight

    def logits(self, y: Tensor, surface: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
        """Decoder output (B, T, D) -> (B, T, V) through the tied embedding matrix (or out_proj).

        With SurfaceFusion, `surface` = (k, v, src_mask) of the source embeddings, and the result
        is the fused log-probabilities (a log-softmax of them changes nothing)."""
        y = self.dec_norm(y)
        out = self._project(y)
        if self.surface is None:
            return out
        return self.surface.fuse(out, self._project(self.surface(y, *surface)))

    def _project(self, y: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, V) by the output matrix."""
        if self.out_proj is not None:
            return self.out_proj(y)
        if self.output_fast is None or torch.is_grad_enabled():
            return y @ self.embed.weight.t()
        return self.output_fast.matmul(y.reshape(-1, y.size(-1)), None).view(*y.shape[:-1], -1)

    def _surface_memory(self, src: Tensor, src_mask: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        """SurfaceFusion's (k, v, src_mask): the source token embeddings (sqrt(D)-scaled, no
        positions) projected once, like a decoder layer's memory; None when it is off."""
        if self.surface is None:
            return None
        emb = self.embed(src) * math.sqrt(self.cfg.d_model)  # (B, S, D)
        return (*self.surface.attn.project_memory(emb), src_mask)

    @contextmanager
    def fast_inference(self) -> Iterator[None]:
        """Within the block, linear layers and the tied output layer multiply by weights laid out for
        decoding (`encdec.linear`); the weights must not change inside it. Re-entrant."""
        tied = self.out_proj is None and self.output_fast is None and bool(self.decoder)
        with InferenceWeights.active(self):
            if tied:
                self.output_fast = InferenceWeights(self.embed.weight)
            try:
                yield
            finally:
                if tied:
                    self.output_fast = None

    def forward(self, src: Tensor | None, src_mask: Tensor | None, tgt_in: Tensor,
                return_attn: bool = False, project: bool = True) -> ModelOutput:
        """src (B, S), src_mask (B, S) bool, tgt_in (B, T) -> ModelOutput with logits (B, T, V).

        project=False skips the output layer and returns the final states (`hidden`, for
        `encdec.loss.fused_output_loss`, which applies `output_weight` chunk by chunk).

        Target padding needs no mask: it sits at the end and the causal mask hides it from
        every earlier position; the loss ignores the padded positions themselves.
        A decoder-only model takes src = src_mask = None.
        """
        if not self.decoder:
            raise ValueError("this model has no decoder (model.n_dec_layers=0); use encode()")
        enc_w = []
        if self.encoder:
            states, enc_w = self.encode(src, src_mask, return_attn)
            memories, memory_mask = self.wiring(states, src_mask)
        else:
            memories, memory_mask = [None] * len(self.decoder), None
        y = self._embed(tgt_in)
        self_w, cross_w = [], []
        for layer, memory in zip(self.decoder, memories):
            # each layer has its own W_K, W_V
            k, v = layer.cross_attn.project_memory(memory) if memory is not None else (None, None)
            y, ws, wc = layer(y, k, v, memory_mask, None, return_attn)
            self_w.append(ws)
            cross_w.append(wc)
        attn = (enc_w, self_w, cross_w) if return_attn else (None, None, None)
        surface = self._surface_memory(src, src_mask) if self.encoder else None
        if not project:
            hidden = self.dec_norm(y)
            return ModelOutput(None, *attn, hidden=hidden,
                               surface=self.surface(hidden, *surface) if surface is not None else None)
        return ModelOutput(self.logits(y, surface), *attn)

    @torch.no_grad()
    def start_decoding(self, src: Tensor, src_mask: Tensor, capacity: int = 0) -> DecoderCache:
        """Run the encoder once and project each decoder layer's memory to cross K/V once.

        `capacity`: target tokens to preallocate self-attention K/V for (the cache grows if needed)."""
        if self.cfg.kind != "encoder-decoder":
            raise ValueError(f"decoding needs an encoder-decoder model, not a {self.cfg.kind}-only one")
        states, _ = self.encode(src, src_mask)
        memories, memory_mask = self.wiring(states, src_mask)
        B, H = src.size(0), self.cfg.n_heads
        layers = []
        for layer, memory in zip(self.decoder, memories):
            ck, cv = layer.cross_attn.project_memory(memory)
            k, v = (empty_self_cache(B, H, capacity, self.cfg.head_dim, like=memory) for _ in range(2))
            layers.append(LayerCache(k, v, ck, cv))
        surface = self._surface_memory(src, src_mask)
        return DecoderCache(layers, memory_mask, surface=surface)

    @torch.no_grad()
    def decode_step(self, tokens: Tensor, cache: DecoderCache) -> tuple[Tensor, DecoderCache]:
        """tokens (B, T) at positions cache.length.. -> (logits (B, T, V), cache T steps longer).

        Writes into the cache's buffers (see `encdec.cache`)."""
        T = tokens.size(1)
        cache = cache.reserve(T)
        y = self._embed(tokens, offset=cache.length)
        for layer, c in zip(self.decoder, cache.layers):
            y, _, _ = layer(y, c.cross_k, c.cross_v, cache.memory_mask, (c.k, c.v, cache.length), False)
        return self.logits(y, cache.surface), replace(cache, length=cache.length + T)
