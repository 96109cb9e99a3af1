"""The training loop: fit a run folder, evaluating and checkpointing as it goes (../shared/STYLE.md C10).

`fit` reads top to bottom: set up (or resume), then steps until the budget is used, then
choose the final weights. A checkpoint holds the weights, optimizer, RNG state and the
`TrainState`, so a resumed CPU run repeats the uninterrupted run's losses exactly.
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import signal
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from encdec import checkpoint as ckpt
from encdec import clock
from encdec.config import RunConfig, TrainConfig, load_json, to_dict
from encdec.data.batching import collate, epoch_order, padding_fraction
from encdec.data.prepare import Data, prepare_data
from encdec.data.vocab import PAD
from encdec.decode import translate_ids
from encdec.distributed import Dist, shard, wrap
from encdec.metrics import bleu, perplexity, sequence_loss
from encdec.model import Transformer, admin_init
from encdec.optim import lr_at, make_optimizer, train_step
from encdec.runtime import Runtime, rng_state, seed_everything, set_rng_state

Log = Callable[[str], None]
now = clock.now  # the loop's clock, which leaves out time the process was stopped; tests replace it


class Interrupted(Exception):
    """Raised after Ctrl-C once the checkpoint is safely written."""


@dataclass
class TrainState:
    """What a checkpoint restores besides weights, optimizer and RNG: where the run stands."""

    step: int = 0
    epoch: int = 0  # epochs completed
    pos: int = 0  # next batch of this epoch's order
    elapsed: float = 0.0  # wall-clock seconds since the run began (stops left out), as of the last checkpoint
    eval_s: float = 0.0  # the part of it spent evaluating, which the time budget does not count
    best: float = -math.inf  # best dev score: BLEU on the fixed subset, or -dev NLL without one
    best_step: int = 0
    snapshots: list[str] = field(default_factory=list)  # RUN/snapshots/ files kept for averaging
    last_eval: int = -1  # step of the last evaluation (its record is in metrics.jsonl)
    lr_scale: float = 1.0  # plateau schedule: the product of its LR decays so far
    last_decay: int = 0  # plateau schedule: step of the last LR decay
    stop_reason: str = ""  # why training ended: "budget" or "converged: ..."


@dataclass
class Loop:
    """One process's working set while it trains a run; lives only as long as `fit`."""

    cfg: RunConfig
    run: Path
    rt: Runtime
    dist: Dist
    log: Log
    data: Data
    model: Transformer
    ddp: torch.nn.Module  # the model, wrapped by DDP when there are several ranks
    opt: torch.optim.Optimizer
    subset: list[int]  # dev sentences scored with BLEU at each evaluation
    order: list[int]  # this epoch's batch order
    t_start: float  # now() at which the run (not this process) began
    bar: _Bar
    board: object | None  # a TensorBoard SummaryWriter
    window: dict = field(default_factory=dict)  # loss and tokens since the last log line


def fit(cfg: RunConfig, run: Path, rt: Runtime, *, log: Log = print, progress: bool = True,
        stop_after_steps: int | None = None, dist: Dist | None = None) -> dict:
    """Train (or resume) the run in folder `run`; returns the final summary dict.

    `stop_after_steps` ends this call early after that many steps in this process, leaving a
    resumable checkpoint (used by tests to check that resume equals an uninterrupted run).
    With several ranks (`dist`, see distributed.py) only rank 0 logs, evaluates and writes files.
    """
    dist = dist or Dist()
    if not dist.is_main:
        log, progress = (lambda msg: None), False
    with ckpt.run_lock(Path(run)) if dist.is_main else contextlib.nullcontext():  # one trainer per folder
        return _fit(cfg, Path(run), rt, log, progress, stop_after_steps, dist)


def _fit(cfg: RunConfig, run: Path, rt: Runtime, log: Log, progress: bool, stop_after_steps: int | None,
         dist: Dist) -> dict:
    loop, state = _start(cfg, run, rt, dist, log, progress)
    tc, steps_here = cfg.train, 0
    try:
        with loop.bar, deferred_interrupts() as signals:
            while True:
                if dist.any(bool(signals)):  # Ctrl-C or SIGTERM arrived during the last step: stop between steps
                    raise KeyboardInterrupt
                used = budget_used(tc, state, loop)
                if dist.any(used >= 1.0):  # rank 0's clock decides for all under a time budget
                    state.stop_reason = "budget"
                    break
                if dist.any(converged(tc, state)):  # rank 0 evaluates, so it decides
                    state.stop_reason = (f"converged: no better dev score in {tc.patience} evaluations "
                                         f"after step {state.best_step}")
                    break
                if stop_after_steps is not None and steps_here >= stop_after_steps:
                    if dist.is_main:
                        save_checkpoint(loop, state)
                    dist.barrier()
                    return {"stopped_at": state.step}
                one_step(loop, state, used)
                steps_here += 1
                if state.step % tc.eval_every == 0:
                    if dist.is_main:
                        evaluate_and_checkpoint(loop, state)
                    dist.barrier()
                    if tc.schedule == "plateau":  # rank 0 evaluated, so its LR decays hold for all
                        state.lr_scale = dist.all_sum(state.lr_scale if dist.is_main else 0.0)
    except KeyboardInterrupt:
        if dist.is_main:
            save_checkpoint(loop, state)
        raise Interrupted(
            f"interrupted at step {state.step}; checkpoint saved - rerun the same command to resume") from None
    if not dist.is_main:
        dist.barrier()  # rank 0 evaluates and writes the final weights
        return {"rank": dist.rank, "step": state.step}
    log(f"stopped at step {state.step}: {state.stop_reason}")
    if state.last_eval != state.step:
        evaluate_and_checkpoint(loop, state)
    summary = finish(loop, state)
    dist.barrier()
    return summary


def _start(cfg: RunConfig, run: Path, rt: Runtime, dist: Dist, log: Log, progress: bool) -> tuple[Loop, TrainState]:
    """Check a resumed run's config, prepare the data, build model and optimizer, restore the
    checkpoint if there is one, and log what is about to train."""
    if dist.is_main:
        ckpt.recover_state(run / "checkpoint")
    dist.barrier()
    resumed = (run / "checkpoint" / "state.pt").exists()
    if resumed:
        _check_same_run(cfg, run)
        ckpt.check_weights(run / "checkpoint" / "model.safetensors", ckpt.expected_shapes(cfg.model))
    elif dist.is_main:
        ckpt.clear_logs(run)  # of an earlier attempt killed before its first checkpoint
    if dist.is_main:  # rank 0 writes the config and trains the vocabulary if needed; the others then read
        ckpt.write_config(run, cfg)
        data = prepare_data(cfg, log)
        shutil.copyfile(data.vocab.path, run / "vocab.model")
    dist.barrier()
    if not dist.is_main:
        data = prepare_data(cfg, log)
    seed_everything(cfg.train.seed)
    model = Transformer(cfg.model).to(rt.device)
    if not resumed:  # a resumed run restores what training made of them instead
        initialise(model, data, cfg, rt, log)
    opt = make_optimizer(model, cfg.train)
    state = TrainState()
    if resumed:
        saved = ckpt.load_state(run / "checkpoint", model)
        ckpt.load_optimizer(opt, model, saved["optimizer"])
        set_rng_state(saved["rng"])
        state = TrainState(**saved["train"])
        dropped = ckpt.trim_metrics(run, state.step) if dist.is_main else 0
        log(f"resumed {run} at step {state.step}"
            + (f" (dropped {dropped} log records written after it)" if dropped else ""))
    n_params = sum(p.numel() for p in model.parameters())
    pad_frac = padding_fraction(data.train_batches, [(len(s), len(t)) for s, t in data.train])
    log(f"model {n_params / 1e6:.2f}M parameters, wiring={cfg.model.wiring}, norm={cfg.model.norm}; {rt.describe()}"
        + (f"; {dist.world} ranks x accum {cfg.train.accum}" if dist.world > 1 or cfg.train.accum > 1 else ""))
    log(f"data {cfg.data.source}: {len(data.train)} train pairs in {len(data.train_batches)} batches "
        f"(padding {100 * pad_frac:.1f}%), {len(data.dev)} dev; vocab {data.vocab.size}")
    loop = Loop(cfg=cfg, run=run, rt=rt, dist=dist, log=log, data=data, model=model,
                ddp=wrap(model, dist),  # the same parameters; DDP all-reduces their gradients
                opt=opt, subset=dev_subset(len(data.dev), cfg.train.dev_bleu_sentences),
                order=epoch_order(len(data.train_batches), seed=cfg.train.seed, epoch=state.epoch),
                t_start=now() - state.elapsed, bar=_Bar(progress),
                board=_tensorboard(run) if dist.is_main else None)
    _reset_window(loop)
    return loop, state


def initialise(model: Transformer, data: Data, cfg: RunConfig, rt: Runtime, log: Callable[[str], None]) -> None:
    """The data-dependent part of a fresh model's initialisation, for every caller that trains one
    from scratch: Admin's residual weights from the run's first training batch (the same batch on
    every rank); nothing for the other norms."""
    if cfg.model.norm != "admin":
        return
    first = collate([data.train[i] for i in data.train_batches[epoch_order(len(data.train_batches),
                                                                           seed=cfg.train.seed, epoch=0)[0]]])
    first = first.to(rt.device)
    omegas = admin_init(model, first.src, first.src_mask, first.tgt_in)
    log("Admin: residual weights profiled on the first training batch: "
        + "; ".join(f"{stack} {w[0]:.2f} ... {w[-1]:.2f} over {len(w)} sublayers" for stack, w in omegas.items() if w))


def _check_same_run(cfg: RunConfig, run: Path) -> None:
    """A run resumes only with its own config; the budget may grow, and the split of a step's
    batches into accumulation may change."""
    saved = load_json(run / "config.json")
    free = dict(max_steps=cfg.train.max_steps, max_minutes=cfg.train.max_minutes, max_epochs=cfg.train.max_epochs,
                accum=cfg.train.accum)
    if replace(saved, train=replace(saved.train, **free)) != cfg:
        diff = [k for k, v in _flat(to_dict(cfg)).items() if _flat(to_dict(saved)).get(k) != v]
        raise ValueError(f"{run} holds a run with a different config ({', '.join(diff)}); "
                         "use another --out, or the same settings to resume")


def budget_used(tc: TrainConfig, state: TrainState, loop: Loop) -> float:
    """Fraction of the training budget used: the largest of steps, training time and epochs."""
    parts = []
    if tc.max_steps > 0:
        parts.append(state.step / tc.max_steps)
    if tc.max_minutes > 0:
        train_s = now() - loop.t_start - state.eval_s  # evaluation time is not counted
        parts.append(train_s / (60 * tc.max_minutes))
    if tc.max_epochs > 0:
        parts.append(_epoch_pos(state, loop) / tc.max_epochs)
    return max(parts)


def on_plateau(tc: TrainConfig, state: TrainState) -> bool:
    """The plateau schedule's rule: `tc.decay_patience` evaluations in a row found no better dev
    score than the best, counted since the best or since the last decay, whichever is later; the
    rule of torch's ReduceLROnPlateau(mode="max", factor=lr_decay, patience=decay_patience - 1,
    threshold=0), kept in TrainState so that the LR stays one pure function of the step."""
    return (tc.schedule == "plateau"
            and state.step - max(state.best_step, state.last_decay) >= tc.decay_patience * tc.eval_every)


def converged(tc: TrainConfig, state: TrainState) -> bool:
    """The patience rule: `tc.patience` evaluations in a row since the best dev score, none better."""
    return tc.patience > 0 and state.last_eval >= 0 and state.step - state.best_step >= tc.patience * tc.eval_every


def _epoch_pos(state: TrainState, loop: Loop) -> float:
    return state.epoch + state.pos / len(loop.order)


def one_step(loop: Loop, state: TrainState, used: float) -> None:
    """Take the next batches of the epoch order, train one step on this rank's share, log it."""
    tc, data = loop.cfg.train, loop.data
    epoch_pos = _epoch_pos(state, loop)
    step_batches, loop.order = next_batches(state, loop.order, loop.dist.world * tc.accum, tc.seed)
    mine = [collate([data.train[i] for i in data.train_batches[b]]).to(loop.rt.device)
            for b in shard(step_batches, loop.dist)]
    total = sum(len(data.train[i][1]) + 1 for b in step_batches for i in data.train_batches[b])  # real target tokens
    state.step += 1
    lr = lr_at(tc, state.step, used, state.lr_scale)
    out = train_step(loop.ddp, mine, loop.opt, lr, tc, loop.rt, total_tokens=total, dist=loop.dist)
    loop.window["loss"] += out["loss"] * out["tokens"]
    loop.window["tokens"] += out["tokens"]
    if state.step % tc.log_every == 0 and loop.dist.is_main:
        dt = now() - loop.window["t"]
        rec = {"step": state.step, "loss": loop.window["loss"] / loop.window["tokens"], "lr": lr,
               "tok_s": loop.window["tokens"] / max(dt, 1e-9), "epoch": round(epoch_pos, 3),
               "elapsed": round(now() - loop.t_start, 1)}
        ckpt.append_metrics(loop.run, rec)
        loop.bar.update(used, rec)
        if loop.board:
            for k in ("loss", "lr", "tok_s"):
                loop.board.add_scalar(f"train/{k}", rec[k], state.step)
        _reset_window(loop)


def next_batches(state: TrainState, order: list[int], k: int, seed: int) -> tuple[list[int], list[int]]:
    """The next k batch indices of the global epoch order, moving on to the next epoch's order
    when one ends (no batch is skipped or repeated); advances `state.pos` and `state.epoch`.
    Returns (batches, the order now current)."""
    batches = []
    for _ in range(k):
        batches.append(order[state.pos])
        state.pos += 1
        if state.pos == len(order):
            state.epoch, state.pos = state.epoch + 1, 0
            order = epoch_order(len(order), seed=seed, epoch=state.epoch)
    return batches, order


def _reset_window(loop: Loop) -> None:
    loop.window = {"loss": 0.0, "tokens": 0, "t": now()}


def evaluate_and_checkpoint(loop: Loop, state: TrainState) -> None:
    """Dev loss and BLEU, a snapshot, the best weights so far, a log record, then a checkpoint."""
    t_eval = now()
    ev = evaluate(loop.model, loop.data, loop.rt)
    ev["dev_bleu"] = dev_bleu(loop.model, loop.data, loop.rt, loop.subset)
    score = dev_score(ev, loop.subset)
    state.snapshots = ckpt.save_snapshot(loop.run, loop.model, state.step, state.snapshots,
                                         loop.cfg.train.average_last)
    if ckpt.is_milestone(state.step):  # kept for the budget curve (test BLEU at 1k, 2k, 4k, ... steps)
        ckpt.save_milestone(loop.run, loop.model, state.step)
    if score > state.best:
        state.best, state.best_step = score, state.step
        ckpt.save_weights(loop.model, loop.run / "best.safetensors")
    tc = loop.cfg.train
    if on_plateau(tc, state):
        state.lr_scale *= tc.lr_decay
        state.last_decay = state.step
        loop.log(f"step {state.step}: no better dev score in {tc.decay_patience} evaluations; "
                 f"LR x {tc.lr_decay}, now {tc.lr * state.lr_scale:.3g}")
    record = {"step": state.step, "elapsed": round(now() - loop.t_start, 1), **ev}
    if tc.schedule == "plateau":
        record["lr_scale"] = state.lr_scale
    if loop.cfg.model.wiring == "mix":  # how the learned mix moves during training (`encdec analyze wiring`)
        record["mix_weights"] = [[round(x, 4) for x in row] for row in loop.model.wiring.mix_weights().tolist()]
    ckpt.append_metrics(loop.run, record)
    if loop.board:
        for k, v in ev.items():
            loop.board.add_scalar(f"dev/{k}", v, state.step)
    state.last_eval = state.step
    if loop.subset:
        loop.log(f"step {state.step}: dev ppl {ev['dev_ppl']:.2f}, dev BLEU {ev['dev_bleu']:.2f} "
                 f"(best {state.best:.2f} at step {state.best_step})")
    else:  # no BLEU subset: the dev loss picks the best weights
        loop.log(f"step {state.step}: dev ppl {ev['dev_ppl']:.2f}, dev loss {ev['dev_nll']:.3f} "
                 f"(best {-state.best:.3f} at step {state.best_step})")
    state.eval_s += now() - t_eval
    loop.window["t"] += now() - t_eval  # tokens/s counts training time only
    save_checkpoint(loop, state)


def save_checkpoint(loop: Loop, state: TrainState) -> None:
    state.elapsed = now() - loop.t_start
    ckpt.save_state(loop.run / "checkpoint", loop.model,
                    {"optimizer": ckpt.optimizer_state(loop.opt, loop.model), "rng": rng_state(),
                     "train": asdict(state), "config": to_dict(loop.cfg)})


def finish(loop: Loop, state: TrainState) -> dict:
    """Choose the final weights on the dev score: the best checkpoint or the average of the last K."""
    cfg, run, rt, data = loop.cfg, loop.run, loop.rt, loop.data
    final = Transformer(cfg.model).to(rt.device)
    ckpt.load_weights(final, run / "best.safetensors")
    chosen, chosen_score = "best", state.best
    if cfg.train.average_last > 1 and len(state.snapshots) > 1:
        avg = ckpt.average_snapshots(run, state.snapshots, cfg.model, rt.device)
        score = dev_score({"dev_bleu": dev_bleu(avg, data, rt, loop.subset)} if loop.subset
                          else evaluate(avg, data, rt), loop.subset)
        what = "dev BLEU" if loop.subset else "dev loss"
        sign = 1 if loop.subset else -1  # the score is minus the loss without a BLEU subset
        loop.log(f"average of the last {len(state.snapshots)} snapshots: {what} {sign * score:.3f} "
                 f"(best single {sign * state.best:.3f})")
        if score > chosen_score:
            chosen, chosen_score, final = f"average of last {len(state.snapshots)}", score, avg
    ckpt.save_weights(final, run / "model.safetensors")
    summary = {"step": state.step, "stop": state.stop_reason, "best_step": state.best_step,
               "train_min": round((state.elapsed - state.eval_s) / 60, 1), "total_min": round(state.elapsed / 60, 1),
               "final_weights": chosen, "dev_score": chosen_score, **evaluate(final, data, rt)}
    ckpt.append_metrics(run, {"final": summary})
    if clock.paused_seconds() > 0:
        loop.log(f"left out {clock.paused_seconds() / 60:.1f} minutes during which this process was stopped")
    return summary


@torch.no_grad()
def evaluate(model: Transformer, data: Data, rt: Runtime) -> dict[str, float]:
    """Dev loss (NLL per target token, no smoothing) and perplexity over the whole dev split."""
    model.eval()
    nll = tokens = 0.0
    for idx in data.dev_batches:
        batch = collate([data.dev[i] for i in idx]).to(rt.device)
        with rt.autocast():
            logits = model(batch.src, batch.src_mask, batch.tgt_in).logits
        _, nll_sum, n = sequence_loss(logits, batch.tgt_out, pad_id=PAD, smoothing=0.0)
        nll += nll_sum.item()
        tokens += n
    return {"dev_nll": nll / max(tokens, 1), "dev_ppl": perplexity(nll, int(tokens))}


def dev_subset(n_dev: int, k: int, seed: int = 0) -> list[int]:
    """A fixed random subset spread over the whole dev split (its first lines are all early books)."""
    if k <= 0 or n_dev == 0:
        return []
    return sorted(random.Random(seed).sample(range(n_dev), min(k, n_dev)))


def dev_bleu(model: Transformer, data: Data, rt: Runtime, subset: list[int]) -> float:
    if not subset:
        return float("nan")
    hyps = translate_ids(model, [data.dev[i][0] for i in subset], rt)
    refs = [data.corpus.dev[i].tgt for i in subset]
    return bleu([data.vocab.decode(h) for h in hyps], [refs]).score


def dev_score(ev: dict[str, float], subset: list[int]) -> float:
    """What picks the best weights: dev BLEU on the subset, or minus the dev NLL without one."""
    return ev["dev_bleu"] if subset else -ev["dev_nll"]


@contextlib.contextmanager
def deferred_interrupts():
    """While training, SIGINT and SIGTERM only append to the yielded list, which the loop checks
    between steps, so the checkpoint it then saves is exactly the state after a whole step (a
    scheduler's SIGTERM included). A second Ctrl-C interrupts at once."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # signals can only be caught there
        yield received
        return

    def handler(signum, frame):
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _tensorboard(run: Path):
    """A SummaryWriter into RUN/tensorboard when the tensorboard package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run / "tensorboard"))


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class _Bar:
    """A rich progress bar over the training budget (step, loss, lr, tokens/s, ETA)."""

    def __init__(self, enabled: bool):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled,
        )
        self.task = self.progress.add_task("train", total=1.0, info="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def update(self, used: float, rec: dict) -> None:
        info = f"step {rec['step']} loss {rec['loss']:.3f} lr {rec['lr']:.2e} {rec['tok_s']:.0f} tok/s"
        self.progress.update(self.task, completed=min(used, 1.0), info=info)
