"""One optimizer step: the optimizer, the learning rate at a step, and `train_step` (../shared/STYLE.md C10).

Separate from train.py's loop so that analyses (gradient flow) take the very step `encdec train`
takes without depending on the loop, its checkpoints or its run folder.
"""

from __future__ import annotations

import contextlib
import math

import torch

from encdec import schedules
from encdec.config import TrainConfig
from encdec.data.batching import Batch
from encdec.data.vocab import PAD
from encdec.distributed import Dist
from encdec.loss import fused_output_loss
from encdec.runtime import Runtime


def make_optimizer(model: torch.nn.Module, tc: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with the config's settings; the fused implementation (one kernel for all tensors) on
    CPU and CUDA, several times faster than the per-tensor loop (benchmarks/README.md)."""
    device = next(model.parameters()).device.type
    return torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tc.adam_betas, eps=tc.adam_eps,
                             weight_decay=tc.weight_decay, fused=device in ("cpu", "cuda"))


def lr_at(cfg: TrainConfig, step: int, progress: float, plateau_scale: float = 1.0) -> float:
    """The learning rate of `step`; `progress` is the fraction of the budget used (linear
    schedule), `plateau_scale` the product of the plateau schedule's decays so far."""
    if cfg.schedule == "inverse_sqrt":
        return cfg.lr * schedules.inverse_sqrt(step, warmup=cfg.warmup_steps)
    if cfg.schedule == "plateau":
        return cfg.lr * schedules.plateau(step, warmup=cfg.warmup_steps, scale=plateau_scale)
    return cfg.lr * schedules.linear(step, warmup=cfg.warmup_steps, progress=progress)


def train_step(model, batches: list[Batch], opt: torch.optim.Optimizer, lr: float, cfg: TrainConfig, rt: Runtime,
               *, total_tokens: int | None = None, dist: Dist | None = None) -> dict[str, float]:
    """One optimizer step over this rank's micro-batches (gradient accumulation when several).

    The loss is the label-smoothed sum over every real target token of the step's batches on
    all ranks, divided by `total_tokens` (default: this rank's tokens); DDP averages gradients
    over ranks, so each rank scales its part by the world size to keep the sum.
    """
    dist = dist or Dist()
    total = total_tokens or sum(b.n_tokens for b in batches)
    raw = getattr(model, "module", model)  # under DDP, the wrapped Transformer
    model.train()
    opt.zero_grad(set_to_none=True)
    loss_sum = nll_sum = 0.0
    for i, batch in enumerate(batches):
        last = i == len(batches) - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with rt.autocast():
                out = model(batch.src, batch.src_mask, batch.tgt_in, project=False)  # hidden (B, T, D)
            loss, nll, _ = fused_output_loss(out.hidden, raw.output_weight, batch.tgt_out, pad_id=PAD,
                                             smoothing=cfg.label_smoothing, surface=out.surface,
                                             lam=raw.cfg.surface_fusion, matmul_dtype=rt.amp_dtype)
            (loss * (dist.world / total)).backward()
        loss_sum += loss.item()
        nll_sum += nll.item()
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm if cfg.clip_norm > 0 else math.inf)
    for group in opt.param_groups:
        group["lr"] = lr
    opt.step()
    loss_sum, nll_sum = dist.all_sum(loss_sum), dist.all_sum(nll_sum)
    return {"loss": loss_sum / total, "nll": nll_sum / total, "tokens": total, "grad_norm": float(gnorm)}
