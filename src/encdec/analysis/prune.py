"""Head importance and pruning (Michel et al. 2019, "Are Sixteen Heads Really Better than One?").

Each head h has a gate xi_h = 1 multiplying its context (`Transformer.set_head_mask`). Its
importance is I_h = E_batches |dL/dxi_h| over dev data, L the token-mean NLL; Michel et al.
normalise importances within each layer by their L2 norm, and so do we, before ranking.
Pruning sets gates to 0 from the least to the most important head of one attention kind and
scores the pruned model (gates act in beam search and every wiring).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from encdec.data.batching import bucket, collate
from encdec.data.vocab import PAD
from encdec.metrics import sequence_loss

if TYPE_CHECKING:
    from encdec.runtime import Runtime

KINDS = ("enc", "dec", "cross")


def ones_mask(cfg) -> dict[str, Tensor]:
    return {"enc": torch.ones(cfg.n_enc_layers, cfg.n_heads), "dec": torch.ones(cfg.n_dec_layers, cfg.n_heads),
            "cross": torch.ones(cfg.n_dec_layers, cfg.n_heads)}


def importance(model, pairs: list[tuple[list[int], list[int]]], rt: Runtime, *, max_tokens: int = 3000,
               normalize: bool = True) -> dict[str, Tensor]:
    """Mean |dL/dxi| per head over batches of `pairs` -> {"enc": (L, H), "dec": ..., "cross": ...}."""
    model.eval()
    gates = {k: v.to(rt.device).requires_grad_() for k, v in ones_mask(model.cfg).items()}
    total = {k: torch.zeros_like(v) for k, v in gates.items()}
    batches = bucket([(len(s), len(t)) for s, t in pairs], max_tokens)
    model.set_head_mask(gates)
    try:
        for idx in batches:
            b = collate([pairs[i] for i in idx]).to(rt.device)
            with rt.autocast():
                logits = model(b.src, b.src_mask, b.tgt_in).logits
            nll, _, n = sequence_loss(logits, b.tgt_out, pad_id=PAD, smoothing=0.0)  # (the 2nd is detached)
            grads = torch.autograd.grad(nll / n, list(gates.values()))
            for k, g in zip(gates, grads):
                total[k] += g.detach().abs()
    finally:
        model.set_head_mask(None)
        model.zero_grad(set_to_none=True)
    imp = {k: (v / max(len(batches), 1)).cpu() for k, v in total.items()}
    if normalize:
        imp = {k: v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12) for k, v in imp.items()}
    return imp


def prune_order(imp: Tensor) -> list[tuple[int, int]]:
    """(layer, head) pairs of one kind, least important first (ties: lower layer, then head)."""
    L, H = imp.shape
    return sorted(((layer, head) for layer in range(L) for head in range(H)),
                  key=lambda lh: (float(imp[lh]), lh))


def mask_without(cfg, kind: str, removed: list[tuple[int, int]]) -> dict[str, Tensor]:
    mask = ones_mask(cfg)
    for layer, head in removed:
        mask[kind][layer, head] = 0.0
    return mask


def keep_best_per_layer(cfg, kind: str, imp: Tensor) -> dict[str, Tensor]:
    """Only the most important head of each layer of `kind` stays on."""
    mask = ones_mask(cfg)
    mask[kind].zero_()
    mask[kind][torch.arange(imp.size(0)), imp.argmax(-1)] = 1.0
    return mask


def curve(model, imp: dict[str, Tensor], score: Callable[[], float], *, kinds=KINDS, steps: int = 10,
          on_point: Callable[[dict], None] | None = None) -> list[dict]:
    """Score the model with 0, 1/steps, ..., all heads of each kind pruned (least important first).

    score() evaluates the model as currently masked (e.g. dev BLEU). Returns rows
    {kind, fraction, heads_pruned, score}; the unpruned score is measured once and shared.
    """
    model.set_head_mask(None)
    base = score()
    rows = []
    try:
        for kind in kinds:
            order = prune_order(imp[kind])
            n = len(order)
            for i in range(steps + 1):
                k = round(i * n / steps)
                if k == 0:
                    value = base
                else:
                    model.set_head_mask(mask_without(model.cfg, kind, order[:k]))
                    value = score()
                row = {"kind": kind, "fraction": k / n, "heads_pruned": k, "heads": n, "score": value}
                rows.append(row)
                if on_point:
                    on_point(row)
            model.set_head_mask(keep_best_per_layer(model.cfg, kind, imp[kind]))
            row = {"kind": kind, "fraction": 1 - imp[kind].size(0) / n, "heads_pruned": n - imp[kind].size(0),
                   "heads": n, "score": score(), "variant": "best head per layer"}
            rows.append(row)
            if on_point:
                on_point(row)
    finally:
        model.set_head_mask(None)
    return rows


def prunable(rows: list[dict], kind: str, tolerance: float = 0.5) -> int:
    """How many heads of `kind` can go (along the importance order) before the score drops by more
    than `tolerance` below the unpruned score: the last point of the curve still within it."""
    points = [r for r in rows if r["kind"] == kind and "variant" not in r]
    base = points[0]["score"]
    ok = 0
    for r in points:
        if r["score"] < base - tolerance:
            break
        ok = r["heads_pruned"]
    return ok
