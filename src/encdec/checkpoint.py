"""Run folders: config JSON, safetensors weights, training state; every write atomic.

runs/NAME/
  config.json            the resolved RunConfig (reloaded strictly)
  vocab.model            the SentencePiece model the run was trained with
  model.safetensors      the final weights (best of: best dev checkpoint, averaged last K)
  best.safetensors       weights at the best dev BLEU (or dev loss)
  checkpoint/            latest resumable state: weights + optimizer + RNG + data position
  snapshots/             weights at the last K evaluations (for averaging)
  milestones/            weights at steps 1k, 2k, 4k, 8k, ... (kept: test BLEU along the budget)
  metrics.jsonl          training log
  tensorboard/           the same log for TensorBoard (when the package is installed)
  .lock                  held (flock) by the process training the run; holds its pid
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from encdec.config import ModelConfig, RunConfig, load_json, save_json
from encdec.model import Transformer


def save_weights(model: torch.nn.Module, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp))
    os.replace(tmp, path)


def check_weights(path: Path, expected: dict[str, tuple[int, ...]]) -> None:
    """Compare a safetensors file's header (names and shapes; no tensor is read) with the model's
    parameter shapes; a ValueError names the first difference. Checked before any work starts."""
    try:
        with safe_open(str(path), framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as e:  # safetensors raises several types for truncated/corrupt files
        raise ValueError(f"cannot read weights {path}: {e}") from None
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise ValueError(f"weights {path} do not match the model config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    for name, shape in expected.items():
        if found[name] != shape:
            raise ValueError(f"weights {path} do not fit the run's config.json: {name} has shape {list(found[name])} "
                             f"in the file, the config gives {list(shape)}")


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The weight shapes a model of `cfg` has, built on the meta device (no memory)."""
    with torch.device("meta"):
        return shapes(Transformer(cfg))


def load_weights(model: torch.nn.Module, path: Path) -> None:
    check_weights(path, shapes(model))
    model.load_state_dict(load_file(str(path)))


def save_state(folder: Path, model: torch.nn.Module, state: dict) -> None:
    """Write weights + training state to `folder` atomically: a complete temp folder, then two
    renames. A kill between the renames leaves no `folder` but a complete temp folder, which
    `recover_state` puts in place on the next start."""
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(model, tmp / "model.safetensors")
    torch.save(state, tmp / "state.pt")
    (tmp / COMPLETE).touch()
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    _pause_for_tests(folder)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


COMPLETE = "complete"  # written last into a checkpoint's temp folder
PAUSE_ENV = "ENCDEC_TEST_CHECKPOINT_PAUSE"


def _pause_for_tests(folder: Path) -> None:
    """Tests only: with $ENCDEC_TEST_CHECKPOINT_PAUSE set to a file name, create that file and
    wait, at the worst moment of a checkpoint write (no `folder` yet), so a test can kill the
    process there."""
    flag = os.environ.get(PAUSE_ENV)
    if flag:
        Path(flag).write_text(str(folder))
        time.sleep(60)


def recover_state(folder: Path) -> None:
    """Finish or undo a checkpoint write that a kill interrupted: with no `folder`, a complete
    temp folder becomes it, else the previous checkpoint (`.old`) is put back."""
    if folder.exists():
        return
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    if (tmp / COMPLETE).exists():
        tmp.rename(folder)
    elif old.exists():
        old.rename(folder)


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
    """Load `optimizer_state` output, matching parameters by name."""
    saved = dict(saved)
    names = saved.pop("param_names", None)
    if names is None:
        raise ValueError("optimizer state has no parameter names (a checkpoint from an encdec before they were "
                         "recorded); start the run in a new folder")
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
            raise ValueError(f"optimizer state does not fit parameter {n}: {tuple(moment.shape)} vs {tuple(p.shape)}")


def save_snapshot(run: Path, model: torch.nn.Module, step: int, kept: list[str], k: int) -> list[str]:
    """Write the weights of `step` to RUN/snapshots/ and delete all but the last `k` snapshots;
    returns the names kept (oldest first), which the training state records."""
    folder = run / "snapshots"
    folder.mkdir(exist_ok=True)
    path = folder / f"step-{step:07d}.safetensors"
    save_weights(model, path)
    kept = (kept + [path.name])[-k:]
    for old in folder.glob("*.safetensors"):
        if old.name not in kept:
            old.unlink()
    return kept


MILESTONE_BASE = 1000


def is_milestone(step: int) -> bool:
    """Steps 1000 * 2^k: where a run's weights are kept for its budget curve."""
    q, r = divmod(step, MILESTONE_BASE)
    return r == 0 and q > 0 and q & (q - 1) == 0


def save_milestone(run: Path, model: torch.nn.Module, step: int) -> Path:
    (run / "milestones").mkdir(exist_ok=True)
    path = run / "milestones" / f"step-{step:07d}.safetensors"
    save_weights(model, path)
    return path


def average_snapshots(run: Path, names: list[str], cfg: ModelConfig, device: torch.device) -> Transformer:
    """A model whose weights are the mean of the named snapshots (summed in float64)."""
    total = None
    for name in names:
        sd = load_file(str(run / "snapshots" / name))
        total = {k: v.double() for k, v in sd.items()} if total is None else {k: total[k] + sd[k].double()
                                                                              for k in total}
    out = Transformer(cfg)
    out.load_state_dict({k: (v / len(names)).to(torch.float32) for k, v in total.items()})
    return out.to(device)


def write_config(run: Path, cfg: RunConfig) -> None:
    run.mkdir(parents=True, exist_ok=True)
    tmp = run / "config.json.tmp"
    save_json(cfg, tmp)
    os.replace(tmp, run / "config.json")


FINAL_WEIGHTS = "model.safetensors"  # what `train` chose in the end (best dev checkpoint or snapshot average)


def load_run(run: Path, *, weights: str = FINAL_WEIGHTS) -> tuple[RunConfig, Transformer]:
    """Config + model of a finished (or checkpointed) run, ready for evaluation; `weights` names
    another weights file inside the run folder (best.safetensors, milestones/…, snapshots/…)."""
    run = Path(run)
    if not (run / "config.json").exists():
        raise ValueError(f"{run} is not an encdec run folder (no config.json)")
    if Path(weights).is_absolute() or ".." in Path(weights).parts:
        raise ValueError(f"weights {weights!r}: name a file inside the run folder, e.g. "
                         "milestones/step-0008000.safetensors")
    cfg = load_json(run / "config.json")
    path = run / weights
    if not path.exists():
        fallback = run / "checkpoint" / FINAL_WEIGHTS
        if weights == FINAL_WEIGHTS and fallback.exists():
            path = fallback
        elif weights == FINAL_WEIGHTS:
            raise ValueError(f"{run} has no {weights}; has training finished? (encdec train --out {run} resumes it)")
        else:
            kept = sorted(str(w.relative_to(run)) for d in ("milestones", "snapshots")
                          for w in (run / d).glob("*.safetensors"))
            raise ValueError(f"{run} has no {weights}; its kept weights: {', '.join(kept) or 'none'}")
    model = Transformer(cfg.model)
    load_weights(model, path)
    model.eval()
    return cfg, model


class RunBusy(ValueError):
    """Another process is training this run folder."""


@contextlib.contextmanager
def run_lock(run: Path) -> Iterator[None]:
    """Hold the run folder for one trainer: a second process training the same folder would
    resume from the same checkpoint and write every log record and checkpoint twice. The lock is
    an flock on `run/.lock`, so the kernel drops it when its process dies, however it dies.
    Raises RunBusy (naming the holder's pid) when another process holds it."""
    import fcntl

    run.mkdir(parents=True, exist_ok=True)
    with (run / ".lock").open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise RunBusy(f"{run} is being trained by another process (pid {holder}); wait for it to end or "
                          "stop it (Ctrl-C or `kill PID`: it saves a checkpoint) before training this folder") from None
        try:
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_busy(run: Path) -> bool:
    """Whether another process is training `run` now (see `run_lock`)."""
    try:
        with run_lock(run):
            return False
    except RunBusy:
        return True


def clear_logs(run: Path) -> None:
    """Remove the training logs of a run that has no checkpoint (a fresh start repeats its steps)."""
    (run / "metrics.jsonl").unlink(missing_ok=True)
    shutil.rmtree(run / "tensorboard", ignore_errors=True)


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
    """Every record of a run's training log, in the order written; ValueError naming the file and
    line where one is not JSON (a log cut off mid-line, or not a log)."""
    path = run / "metrics.jsonl"
    records = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {i} is not JSON ({e.msg})") from None
    return records


def append_metrics(run: Path, record: dict) -> None:
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
