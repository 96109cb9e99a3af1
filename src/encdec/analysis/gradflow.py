"""Gradient flow: L2 norms of the loss gradient per layer and per sublayer.

Groups: "emb" (shared embedding), "enc{i}.self_attn|ffn|norms", "dec{i}.self_attn|cross_attn|ffn|norms",
"wiring", and per-layer totals "enc{i}", "dec{i}". Norms are of the raw gradient of the mean
label-smoothed loss, before clipping: `train_step` clips in place, and a clipped gradient is the
raw one times min(1, clip / total norm), which `training_norms` undoes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from torch import nn

from encdec.data.batching import collate, epoch_order
from encdec.data.vocab import PAD
from encdec.metrics import sequence_loss

if TYPE_CHECKING:
    from encdec.runtime import Runtime


def groups(model) -> dict[str, list[nn.Parameter]]:
    """Parameter groups of every sublayer and layer, in stack order."""
    out: dict[str, list[nn.Parameter]] = {"emb": list(model.embed.parameters())}
    for prefix, stack in (("enc", model.encoder), ("dec", model.decoder)):
        for i, layer in enumerate(stack, start=1):
            parts = {"self_attn": layer.self_attn, "cross_attn": getattr(layer, "cross_attn", None), "ffn": layer.ffn}
            for name, module in parts.items():
                if module is not None:
                    out[f"{prefix}{i}.{name}"] = list(module.parameters())
            out[f"{prefix}{i}.norms"] = [p for n, m in layer.named_children() if n.startswith("norm") and m is not None
                                         for p in m.parameters()]
            out[f"{prefix}{i}"] = list(layer.parameters())
    wiring = list(model.wiring.parameters())
    if wiring:
        out["wiring"] = wiring
    return out


def norms(model, scale: float = 1.0) -> dict[str, float]:
    """Current .grad norms per group (times `scale`); a group without gradient counts 0."""
    result = {}
    for name, params in groups(model).items():
        sq = sum(float(p.grad.detach().float().pow(2).sum()) for p in params if p.grad is not None)
        result[name] = scale * math.sqrt(sq)
    return result


def training_norms(model, data, cfg, rt: Runtime, steps: int, *, log=None) -> list[dict]:
    """Train `model` from its current weights for `steps` steps (the run's optimiser, schedule and
    clipping), recording the pre-clip gradient norms of every group at every step."""
    from encdec.optim import lr_at, make_optimizer, train_step

    tc = cfg.train
    opt = make_optimizer(model, tc)
    order = epoch_order(len(data.train_batches), seed=tc.seed, epoch=0)
    records = []
    for step in range(1, steps + 1):
        idx = data.train_batches[order[(step - 1) % len(order)]]
        batch = collate([data.train[i] for i in idx]).to(rt.device)
        stats = train_step(model, [batch], opt, lr_at(tc, step, step / max(steps, 1)), tc, rt)
        unclip = max(1.0, stats["grad_norm"] / tc.clip_norm) if tc.clip_norm > 0 else 1.0
        records.append({"step": step, "loss": stats["loss"], "grad_norm": stats["grad_norm"], **norms(model, unclip)})
        if log and step % 50 == 0:
            log(f"  step {step}/{steps}: loss {stats['loss']:.3f}, grad norm {stats['grad_norm']:.3f}")
    return records


def _attention_over_residual(model) -> tuple[dict[str, list[float]], list]:
    """Hooks that collect, per encoder layer, the mean L2 norm over real source tokens of its
    self-attention output and of the residual stream it reads (the layer's input):
    sums["enc{i}"] = [attention norm sum, residual norm sum]. Remove the returned handles after use."""
    sums: dict[str, list[float]] = {}
    handles = []
    for i, layer in enumerate(model.encoder, start=1):
        key, seen = f"enc{i}", {}

        def pre(module, args, key=key, seen=seen):
            x, mask = args[0], args[1][:, 0, 0, :]  # (B, S, D); the key mask (B, 1, 1, S) -> (B, S), True = real
            seen["mask"] = mask
            sums.setdefault(key, [0.0, 0.0])[1] += float(x.detach().float().norm(dim=-1)[mask].mean())

        def post(module, args, output, key=key, seen=seen):
            a = output[0]  # (B, S, D) the self-attention sublayer's output, before dropout
            sums[key][0] += float(a.detach().float().norm(dim=-1)[seen["mask"]].mean())

        handles += [layer.register_forward_pre_hook(pre), layer.self_attn.register_forward_hook(post)]
    return sums, handles


def frozen_norms(model, data, cfg, rt: Runtime, batches: int, *, dropout: bool = True) -> dict[str, float]:
    """Mean gradient norms of a trained model over `batches` training batches, without updating it,
    and per encoder layer "enc{i}.attn/residual": the norm of its self-attention output over the norm
    of the residual stream it adds to. Under post-LN a ratio far above 1 means the layer's LayerNorm
    all but erases its input, and with it the gradient to the layers below.

    With `dropout` (the default) the model runs as in training; without, in eval mode, so that the
    gradients are of the deterministic model and runs trained at different dropout rates compare."""
    model.train(dropout)
    order = epoch_order(len(data.train_batches), seed=cfg.train.seed, epoch=0)
    total: dict[str, float] = {}
    ratio_sums, handles = _attention_over_residual(model)
    try:
        for j in range(batches):
            batch = collate([data.train[i] for i in data.train_batches[order[j % len(order)]]]).to(rt.device)
            model.zero_grad(set_to_none=True)
            with rt.autocast():
                logits = model(batch.src, batch.src_mask, batch.tgt_in).logits
            loss, _, n = sequence_loss(logits, batch.tgt_out, pad_id=PAD, smoothing=cfg.train.label_smoothing)
            (loss / n).backward()
            for name, v in norms(model).items():
                total[name] = total.get(name, 0.0) + v / batches
    finally:
        for h in handles:
            h.remove()
    model.zero_grad(set_to_none=True)
    return total | {f"{key}.attn/residual": attn / resid for key, (attn, resid) in ratio_sums.items()}
