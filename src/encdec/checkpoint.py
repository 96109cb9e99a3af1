"""Run folders: config JSON, safetensors weights, training state; every write atomic.

runs/NAME/
  config.json            the resolved RunConfig (reloaded strictly)
  vocab.model            the SentencePiece model the run was trained with
  model.safetensors      the final weights (best of: best dev checkpoint, averaged last K)
  best.safetensors       weights at the best dev BLEU (or dev loss)
  checkpoint/            latest resumable state: weights + optimizer + RNG + data position
  snapshots/             weights at the last K evaluations (for averaging)
  metrics.jsonl          training log
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from encdec.config import RunConfig, load_json, save_json
from encdec.model import Transformer


def save_weights(model: torch.nn.Module, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp))
    os.replace(tmp, path)


def load_weights(model: torch.nn.Module, path: Path) -> None:
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises several types for truncated/corrupt files
        raise ValueError(f"cannot read weights {path}: {e}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"weights {path} do not match the model config: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )


def save_state(folder: Path, model: torch.nn.Module, state: dict) -> None:
    """Write weights + training state to `folder` atomically (temp folder, then rename)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(model, tmp / "model.safetensors")
    torch.save(state, tmp / "state.pt")
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def load_state(folder: Path, model: torch.nn.Module) -> dict:
    load_weights(model, folder / "model.safetensors")
    try:
        return torch.load(folder / "state.pt", weights_only=False)
    except Exception as e:
        raise ValueError(f"cannot read training state {folder / 'state.pt'}: {e}") from None


def optimizer_state(opt: torch.optim.Optimizer, model: torch.nn.Module) -> dict:
    """The optimizer's state dict plus the parameter names in its order, so a checkpoint still
    resumes after the code registers the model's modules in another order."""
    return {**opt.state_dict(), "param_names": [n for n, _ in model.named_parameters()]}


def load_optimizer(opt: torch.optim.Optimizer, model: torch.nn.Module, saved: dict) -> None:
    """Load `optimizer_state` output, matching parameters by name (by position for old checkpoints)."""
    saved = dict(saved)
    names = saved.pop("param_names", None)
    if names is not None:
        name_of = {id(p): n for n, p in model.named_parameters()}
        saved_id = {n: i for i, n in enumerate(names)}
        if set(saved_id) != set(name_of.values()):
            odd = sorted(set(saved_id) ^ set(name_of.values()))
            raise ValueError(f"optimizer state is for other parameters: {odd[:5]}")
        saved["param_groups"] = [{**g, "params": [saved_id[name_of[id(p)]] for p in cur["params"]]}
                                 for g, cur in zip(saved["param_groups"], opt.param_groups)]
    opt.load_state_dict(saved)
    for n, p in model.named_parameters():
        moment = opt.state.get(p, {}).get("exp_avg")
        if moment is not None and moment.shape != p.shape:
            raise ValueError(f"optimizer state does not fit parameter {n}: {tuple(moment.shape)} vs {tuple(p.shape)} "
                             "(a checkpoint from another code version; add its parameter order as 'param_names')")


def write_config(run: Path, cfg: RunConfig) -> None:
    run.mkdir(parents=True, exist_ok=True)
    tmp = run / "config.json.tmp"
    save_json(cfg, tmp)
    os.replace(tmp, run / "config.json")


def load_run(run: Path, *, weights: str = "model.safetensors") -> tuple[RunConfig, Transformer]:
    """Config + model of a finished (or checkpointed) run, ready for evaluation."""
    run = Path(run)
    if not (run / "config.json").exists():
        raise ValueError(f"{run} is not an encdec run folder (no config.json)")
    cfg = load_json(run / "config.json")
    path = run / weights
    if not path.exists():
        fallback = run / "checkpoint" / "model.safetensors"
        if weights == "model.safetensors" and fallback.exists():
            path = fallback
        else:
            raise ValueError(f"{run} has no {weights}; has training finished? (encdec train --out {run} resumes it)")
    model = Transformer(cfg.model)
    load_weights(model, path)
    model.eval()
    return cfg, model


def trim_metrics(run: Path, step: int) -> int:
    """Drop the log records written after the checkpoint at `step` (a run killed past its last
    checkpoint repeats those steps on resume) and any earlier final summary. Returns how many."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    keep = [line for line in lines if line.strip() and json.loads(line).get("step", math.inf) <= step]
    if len(keep) != len(lines):
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, path)
    return len(lines) - len(keep)


def read_metrics(run: Path) -> list[dict]:
    """Every record of a run's training log, in the order written."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def append_metrics(run: Path, record: dict) -> None:
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
