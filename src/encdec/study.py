"""Sweeps: one base config, one or more axes varied, every run on an equal budget, K seeds each.

A study is a list of runs `(name, config)` (../shared/STYLE.md C10) under one folder:

    <out>/study.json                 the plan (base config, axes, seeds, beam)
    <out>/<point>/seed-<k>/          an ordinary `encdec train` run folder (config, checkpoint,
                                     metrics.jsonl, hypotheses, eval.test.beam<b>.json)
    <out>/runs.csv                   one row per finished run
    <out>/results.{csv,json,md}      one row per point, mean and std over seeds
    <out>/*.png                      BLEU against the axis, PPL against parameters, BLEU against speed,
                                     dev BLEU against training step
    <out>/decode_speed.json          with --time-decoding: every point's decoding speed, timed together

A run counts as finished when its eval JSON exists; re-running the study skips finished runs
and resumes an interrupted one from its last checkpoint (that is `fit`'s own resume). A study
grows: the same command with more values or seeds plans the new runs beside the old ones.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from encdec.config import WIRINGS, RunConfig, from_dict, load_json, run_config, to_dict
from encdec.config import until_converged as config_until_converged

if TYPE_CHECKING:
    from encdec.runtime import Runtime

AXES = ("heads", "depth", "width", "wiring")
DEFAULT_VALUES = {
    "heads": ("1", "2", "4", "8", "16"),  # Vaswani et al. Table 3 row (A), d_k = d_v = d_model / h
    "depth": ("1", "2", "3", "4", "6", "6-1", "1-6"),  # N, or ENC-DEC (deep encoder, shallow decoder: Kasai et al.)
    "width": ("128", "256", "512"),  # d_model with d_ff = 4 d_model (Table 3 row C)
    "wiring": WIRINGS,
}


@dataclass(frozen=True)
class StudyRun:
    point: tuple[tuple[str, str], ...]  # ((axis, value), ...)
    seed: int
    cfg: RunConfig

    @property
    def point_name(self) -> str:
        return ",".join(f"{a}={v}" for a, v in self.point)

    @property
    def folder(self) -> str:
        return f"{self.point_name}/seed-{self.seed}"


def model_changes(axis: str, value: str) -> dict:
    """The ModelConfig fields one axis value sets.

    d_head is left to the base: unset, it follows d_model / h (Table 3's row (A) and (C));
    pinned with `--set model.d_head=64`, the heads axis varies h at a fixed d_k instead."""
    try:
        if axis == "heads":
            return {"n_heads": int(value)}
        if axis == "depth":
            enc, _, dec = value.partition("-")
            return {"n_enc_layers": int(enc), "n_dec_layers": int(dec or enc)}
        if axis == "width":
            return {"d_model": int(value), "d_ff": 4 * int(value)}
    except ValueError:
        raise ValueError(f"{axis}={value!r}: expected an integer{' or ENC-DEC' if axis == 'depth' else ''}") from None
    if axis == "wiring":
        return wiring_changes(value)
    raise ValueError(f"unknown study axis {axis!r}; choose from {', '.join(AXES)}")


WIRING_VALUE = re.compile(r"(?P<scheme>[a-z]+)(?:@(?P<states>\d+(?:\+\d+)*))?(?:\+sf(?P<sf>\d*\.?\d+))?")


def wiring_changes(value: str) -> dict:
    """A wiring point: SCHEME[@S1+S2...][+sfLAMBDA], e.g. `dense`, `dense@0+3` (dense over states 0
    and 3: `model.memory_states=[0,3]`), `final+sf0.2` (`model.surface_fusion=0.2`). Only the fields
    the value names are set; the rest come from the base."""
    m = WIRING_VALUE.fullmatch(value)
    if m is None or m["scheme"] not in WIRINGS:
        raise ValueError(f"wiring={value!r}: expected SCHEME[@S1+S2...][+sfLAMBDA] with SCHEME one of "
                         f"{', '.join(WIRINGS)}, e.g. dense@0+3 or final+sf0.2")
    changes: dict = {"wiring": m["scheme"]}
    if m["states"] is not None:
        changes["memory_states"] = tuple(int(s) for s in m["states"].split("+"))
    if m["sf"] is not None:
        changes["surface_fusion"] = float(m["sf"])
    return changes


def parse_axis(spec: str) -> tuple[str, tuple[str, ...]]:
    """'heads=1,4,8' -> ('heads', ('1', '4', '8')); 'heads' -> the default values."""
    axis, _, values = spec.partition("=")
    axis = axis.strip()
    if axis not in AXES:
        raise ValueError(f"unknown study axis {axis!r}; choose from {', '.join(AXES)}")
    vals = tuple(v.strip() for v in values.split(",") if v.strip()) if values else DEFAULT_VALUES[axis]
    if not vals:
        raise ValueError(f"--axis {spec!r} lists no values")
    return axis, vals


def plan(base: RunConfig, axes: list[tuple[str, tuple[str, ...]]], seeds: list[int],
         configure: Callable[[dict], RunConfig] | None = None) -> list[StudyRun]:
    """Cross product of the axes' values, times the seeds; every config is validated here, up front.

    A point's config is `configure(its ModelConfig changes)` when given (`make_plan` rebuilds it
    from the preset, so a recipe that follows the model follows the point), else `base` with the
    changes. Seed-major order: every point runs once before any runs a second time, so a study
    stopped half-way already covers the whole axis."""
    names = [a for a, _ in axes]
    if len(set(names)) != len(names):
        raise ValueError(f"an axis appears twice: {names}")
    runs = []
    for combo in itertools.product(*[[(a, v) for v in vals] for a, vals in axes]):
        changes: dict = {}
        for axis, value in combo:
            changes.update(model_changes(axis, value))
        try:
            cfg = configure(changes) if configure else replace(base, model=replace(base.model, **changes))
        except ValueError as e:
            raise ValueError(f"point {','.join(f'{a}={v}' for a, v in combo)}: {e}") from None
        for seed in seeds:
            runs.append(StudyRun(tuple(combo), seed, replace(cfg, train=replace(cfg.train, seed=seed))))
    return sorted(runs, key=lambda r: seeds.index(r.seed))  # stable: points keep their order within a seed


@dataclass(frozen=True)
class StudyPlan:
    folder: Path
    axes: list[tuple[str, tuple[str, ...]]]  # [(axis, values), ...]
    base: RunConfig
    runs: list[StudyRun]
    beam: int
    limit: int  # test sentences scored per run (0 = all)
    title: str  # what the tables and plots are titled: corpus, base, changes, budget
    reference: str  # the point every other is tested against (paired bootstrap)

    @property
    def axis_names(self) -> list[str]:
        return [a for a, _ in self.axes]

    def unfinished(self) -> list[StudyRun]:
        return [r for r in self.runs if not is_finished(self.folder, r, self.beam)]


SMOKE = ["train.warmup_steps=5", "train.eval_every=1000", "train.dev_bleu_sentences=50", "train.max_tokens=1000"]


def make_plan(axis: str, values: str | None, grid_axes: list[str], overrides: list[str], *, preset_name: str,
              data: str, steps: int | None, minutes: float | None, seeds: int, beam: int, smoke: bool,
              out: Path | None, until_converged: bool = False, reference: str | None = None) -> StudyPlan:
    """Validate a study's command line, plan its runs and write the plan (`write_plan`).

    `axis` is one of AXES with `values` (None: the defaults), or "grid" with two or more
    `grid_axes` of the form AXIS=V1,V2. `overrides` (--set) may not touch a field the study varies.
    `smoke` shrinks everything to a minutes-long check of the pipeline; `until_converged` trains
    every run to convergence (`config.until_converged`) under a cap of `steps`. `reference` names
    the point the others are tested against (default: the first)."""
    if axis == "grid":
        if len(grid_axes) < 2:
            raise ValueError("grid needs two or more --axis AXIS=V1,V2 options")
        spec = [parse_axis(a) for a in grid_axes]
    else:
        if grid_axes:
            raise ValueError("--axis is for grid studies; for one axis use --values")
        spec = [parse_axis(axis if values is None else f"{axis}={values}")]
    varied = {f"model.{k}" for a, vals in spec for v in vals for k in model_changes(a, v)} | {"train.seed"}
    for key in (item.partition("=")[0].strip() for item in overrides):
        if key in varied:
            raise ValueError(f"--set {key}=…: the study sets {key} for every run "
                             "(from its axes, or --seeds for train.seed); drop the --set")
    if seeds < 1:
        raise ValueError(f"--seeds={seeds} must be >= 1")
    if (steps is not None and steps < 1) or (minutes is not None and minutes <= 0):
        raise ValueError(f"the budget must be > 0 (--steps={steps}, --minutes={minutes})")
    if until_converged and minutes is not None:
        raise ValueError("--until-converged takes a step cap (--steps), not --minutes")
    cap = steps
    steps, minutes = steps or 1000, minutes or 0.0
    limit = 0
    # the title names what was changed from the preset (not where the files live)
    changes = "".join(f" + {item}" for item in overrides if not item.startswith("data.cache_dir="))
    if smoke:
        preset_name, steps, minutes, beam, limit, seeds = "tiny", 20, 0.0, 1, 100, min(seeds, 2)
        cap = steps
        overrides = [*SMOKE, *overrides]

    def configure(changes: dict) -> RunConfig:
        cfg = run_config(preset_name, data, steps=0 if minutes > 0 else steps, minutes=minutes, overrides=overrides,
                         model_changes=changes)
        return config_until_converged(cfg, cap=cap) if until_converged else cfg

    base = configure({})
    if until_converged:
        steps = base.train.max_steps
    seed_list = list(range(1, seeds + 1))
    runs = plan(base, spec, seed_list, configure)
    folder = out or Path(f"runs/study-{axis}")
    write_plan(folder, base, spec, seed_list, beam, runs)
    budget = f"{steps} steps" if not minutes else f"{minutes} min"
    if until_converged:
        budget = f"until converged (patience {base.train.patience} x {base.train.eval_every} steps, cap {steps})"
    title = f"{data}, {preset_name} base{changes}, {budget} per run"
    points = list(dict.fromkeys(r.point_name for r in runs))
    if reference is not None and reference not in points:
        raise ValueError(f"--reference={reference!r} is not a point of this study; choose one of {', '.join(points)}")
    return StudyPlan(folder, spec, base, runs, beam, limit, title, reference or points[0])


def run_local(study: StudyPlan, todo: list[StudyRun], rt: Runtime, *, log: Callable[[str], None] = print,
              status: Callable[[str], None] = lambda text: None, advance: Callable[[], None] = lambda: None) -> None:
    """Train and score the runs one after another in this process. `status` gets the current
    run's latest news, `advance` is called after each run; a run another process is training is
    skipped. Raises ValueError naming the run that failed, and `train.Interrupted` on Ctrl-C
    (rerunning the study resumes)."""
    from encdec.checkpoint import is_busy
    from encdec.evaluation import score_run
    from encdec.train import fit

    for i, r in enumerate(todo, start=1):
        head = f"run {i}/{len(todo)}: {r.folder}"
        status(head)
        if is_busy(study.folder / r.folder):  # e.g. a scheduler's `encdec train` line, or a second study process
            log(f"{head}: being trained by another process; skipped (rerun the study to collect it when it ends)")
            advance()
            continue
        log(head)

        def run_log(msg: str, head: str = head) -> None:
            log(msg)
            status(f"{head} | {msg[:60]}")

        try:
            fit(r.cfg, study.folder / r.folder, rt, log=run_log, progress=False)
            score_run(study.folder / r.folder, "test", rt, beam=study.beam, limit=study.limit)
        except ValueError as e:
            raise ValueError(f"{r.folder}: {e}") from None
        advance()


def run_on_ray(study: StudyPlan, todo: list[StudyRun], *, address: str | None, cpus: int,
               log: Callable[[str], None] = print) -> None:
    """Submit each run as a Ray task running `python -m encdec train` in a subprocess with `cpus`
    threads; raises ValueError listing the runs that failed."""
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs Ray: pip install 'ray>=2.9' (or pip install -e .[ray])") from None
    ray.init(address=address, num_cpus=None if address else max(cpus, 2), include_dashboard=False,
             log_to_driver=False, configure_logging=False)

    @ray.remote(num_cpus=cpus)
    def train_one(cmd: list[str], threads: int) -> tuple[int, str]:
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        return p.returncode, p.stderr[-3000:]

    def command(r: StudyRun) -> list[str]:
        cmd = train_command(study.folder.resolve(), r, study.beam, study.limit)
        return [sys.executable, "-m", "encdec", *cmd[1:]]

    log(f"submitting {len(todo)} runs to Ray ({ray.cluster_resources().get('CPU', 0):.0f} CPUs, {cpus} per run)")
    futures = {train_one.remote(command(r), cpus): r for r in todo}
    failed, pending = [], list(futures)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        rc, err = ray.get(done[0])
        r = futures[done[0]]
        log(f"{r.folder}: {'done' if rc == 0 else f'failed (exit {rc})'}")
        if rc != 0:
            failed.append((r.folder, err.strip().splitlines()[-1:] or ["?"]))
    ray.shutdown()
    if failed:
        raise ValueError("runs failed: " + "; ".join(f"{f}: {e[0]}" for f, e in failed))


def is_finished(study_dir: Path, run: StudyRun, beam: int) -> bool:
    from encdec.evaluation import result_path

    return result_path(study_dir / run.folder, "test", beam).exists()


def progress(study_dir: Path, run: StudyRun) -> str:
    """Where an unfinished run stands, from its metrics.jsonl: the step reached, its latest and best
    dev score (dev BLEU on the subset, or the dev loss without one: what the run itself ranks by,
    `encdec.train.dev_score`), how many evaluations since the best (with the patience rule on),
    and whether a process is training it now."""
    from encdec.checkpoint import is_busy, read_metrics

    folder = study_dir / run.folder
    if not (folder / "metrics.jsonl").exists():
        return f"{run.folder}: not started"
    records = read_metrics(folder)
    step = max((r["step"] for r in records if "step" in r), default=0)
    evals = [r for r in records if "dev_nll" in r]
    state = "training" if is_busy(folder) else "stopped"
    text = f"{run.folder}: {state} at step {step:,} of {run.cfg.train.max_steps:,}"
    if not evals:
        return text + ", no evaluation yet"
    name, key, sign = ("dev BLEU", "dev_bleu", 1) if "dev_bleu" in evals[-1] else ("dev loss", "dev_nll", -1)
    best = max(evals, key=lambda r: (sign * r[key], -r["step"]))  # the first evaluation reaching the best score
    best_step, last = best["step"], evals[-1]
    text += f", {name} {last[key]:.2f} at step {last['step']:,} (best {best[key]:.2f} at step {best_step:,}"
    tc = run.cfg.train
    if tc.patience:
        text += f"; {(last['step'] - best_step) // tc.eval_every} of {tc.patience} evaluations without a better one"
    return text + ")"


def train_command(study_dir: Path, run: StudyRun, beam: int, limit: int = 0) -> list[str]:
    """A self-contained shell command for one run (its config.json is written by `write_plan`)."""
    folder = study_dir / run.folder
    cmd = ["encdec", "train", "--out", str(folder), "--config", str(folder / "config.json"), "--beam", str(beam)]
    return cmd + (["--eval-limit", str(limit)] if limit else [])


def _grows(old: dict, new: dict) -> bool:
    """Whether study plan `new` (study.json without its base) holds all of plan `old`: the same axes
    in the same order and beam, every old value of each axis and every old seed."""
    if old["beam"] != new["beam"] or [a for a, _ in old["axes"]] != [a for a, _ in new["axes"]]:
        return False
    return set(old["seeds"]) <= set(new["seeds"]) and all(
        set(old_vals) <= set(new_vals) for (_, old_vals), (_, new_vals) in zip(old["axes"], new["axes"]))


def write_plan(study_dir: Path, base: RunConfig, axes, seeds, beam: int, runs: list[StudyRun]) -> None:
    """study.json, and each run's config.json. An existing study must have the same plan, or grow
    by values or seeds: a superset of its points and seeds with the same base config (compared as a
    config, so that a field added to encdec since, at its default, changes nothing) and beam; its
    runs are kept, finished or not."""
    plan_doc = {"base": to_dict(base), "axes": [[a, list(v)] for a, v in axes], "seeds": seeds, "beam": beam}
    path = study_dir / "study.json"
    if path.exists():
        old = json.loads(path.read_text())
        if not _grows(old, json.loads(json.dumps(plan_doc))) or from_dict(old.get("base", {})) != base:
            raise ValueError(f"{study_dir} holds a study with a different plan; use another --out (or the "
                             "same axes, budget and settings to resume it, with more values or seeds to extend it)")
    study_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan_doc, indent=2) + "\n")
    for run in runs:
        folder = study_dir / run.folder
        folder.mkdir(parents=True, exist_ok=True)
        cfg_file = folder / "config.json"
        if (folder / "metrics.jsonl").exists():
            continue  # a started run's config.json is the trainer's record (e.g. the precision it used)
        if not cfg_file.exists() or load_json(cfg_file) != run.cfg:
            cfg_file.write_text(json.dumps(to_dict(run.cfg), indent=2) + "\n")


# --- results -------------------------------------------------------------------------------

METRICS = ("params", "dev_ppl", "dev_bleu", "test_bleu", "test_chrf", "sent_per_s", "train_tok_s", "train_min")
SPEED_FILE = "decode_speed.json"


CURVES_FILE = "budget_curves.json"


def budget_curves(study: StudyPlan, rt: Runtime, *, log=print) -> dict:
    """Test BLEU of every finished run at each kept milestone (steps 1k, 2k, 4k, ...: see
    `checkpoint.is_milestone`) and at its end, with the study's beam: does a gap between points
    close with training? Scores each (run, milestone) once; writes and returns budget_curves.json:
    {point: {"milestones": {step: [BLEU per seed]}, "end": [[step, BLEU] per seed]}}; the end is
    the run's final weights at the step where it stopped."""
    from encdec.checkpoint import load_run, read_metrics
    from encdec.data import load_corpus
    from encdec.data.vocab import Vocab
    from encdec.decode import translate_ids
    from encdec.evaluation import result_path
    from encdec.metrics import bleu

    path = study.folder / CURVES_FILE
    done: dict = json.loads(path.read_text())["scores"] if path.exists() else {}  # "folder|step" -> BLEU
    data = study.base.data
    pairs = load_corpus(data.source, data.cache_dir).split("test")
    pairs = pairs[: study.limit] if study.limit else pairs
    refs = [p.tgt for p in pairs]
    curves: dict[str, dict] = {}
    for run in study.runs:
        folder = study.folder / run.folder
        if not is_finished(study.folder, run, study.beam):
            continue
        vocab, srcs = None, None  # the run's vocabulary and encoded test sources, made on first need
        files = {int(w.stem.split("-")[1]): w.name for w in (folder / "milestones").glob("step-*.safetensors")}
        scored = {int(key.partition("|")[2]) for key in done if key.partition("|")[0] == run.folder}
        for step in sorted(files.keys() | scored):  # a score outlives its weights (a lost machine)
            key = f"{run.folder}|{step}"
            if key not in done:
                _, model = load_run(folder, weights=f"milestones/{files[step]}")
                if vocab is None:
                    vocab = Vocab(folder / "vocab.model")
                    srcs = vocab.encode([p.src for p in pairs])
                hyps = translate_ids(model.to(rt.device), srcs, rt, beam=study.beam)
                done[key] = round(bleu([vocab.decode(h) for h in hyps], [refs]).score, 2)
                log(f"{run.folder} at step {step}: test BLEU {done[key]}")
                path.write_text(json.dumps({"scores": done}, indent=2) + "\n")  # progress survives a stop
            point = curves.setdefault(run.point_name, {"milestones": {}, "end": []})
            point["milestones"].setdefault(str(step), []).append(done[key])
        end_step = next(r["final"]["step"] for r in reversed(read_metrics(folder)) if "final" in r)
        end_bleu = json.loads(result_path(folder, "test", study.beam).read_text())["bleu"]
        curves.setdefault(run.point_name, {"milestones": {}, "end": []})["end"].append([end_step, end_bleu])
    path.write_text(json.dumps({"scores": done, "curves": curves}, indent=2) + "\n")
    return curves


def time_decoding(study_dir: Path, runs: list[StudyRun], beam: int, rt: Runtime, *, sentences: int = 200,
                  rounds: int = 3, log=print) -> dict:
    """Decoding speed of every point, timed together; writes and returns `decode_speed.json`.

    Each run's own test evaluation times its decoding, but the runs of a study are hours or days
    apart, and this project's shared machine drifts by tens of percent in that time, more than
    heads or depth change the speed. So one finished model per point (its lowest seed) decodes
    the first `sentences` test sentences with the study's beam, the points taking turns for
    `rounds` rounds after a warm-up; reported is the median sentences/s per point.
    """
    import time

    from encdec.checkpoint import load_run
    from encdec.data import load_corpus
    from encdec.data.vocab import Vocab
    from encdec.decode import translate_ids

    data = runs[0].cfg.data  # the axes vary the model only: every run reads the same corpus
    sources = [p.src for p in load_corpus(data.source, data.cache_dir).split("test")[:sentences]]
    models = {}
    for name in dict.fromkeys(r.point_name for r in runs):
        done = [r for r in runs if r.point_name == name and is_finished(study_dir, r, beam)]
        if not done:
            continue
        folder = study_dir / done[0].folder
        _, model = load_run(folder)
        models[name] = (model.to(rt.device).eval(), Vocab(folder / "vocab.model").encode(sources))
    if not models:
        raise ValueError("no finished runs to time")

    def decode(name: str) -> float:
        model, srcs = models[name]
        t0 = time.perf_counter()
        translate_ids(model, srcs, rt, beam=beam)
        return len(srcs) / (time.perf_counter() - t0)

    for model, srcs in models.values():  # warm-up
        translate_ids(model, srcs[:20], rt, beam=beam)
    timings: dict[str, list[float]] = {name: [] for name in models}
    for k in range(rounds):
        for name in models:
            timings[name].append(decode(name))
        log(f"decoding speed, round {k + 1}/{rounds}: " + ", ".join(f"{n} {v[-1]:.1f}" for n, v in timings.items()))
    doc = {"beam": beam, "sentences": len(next(iter(models.values()))[1]), "rounds": rounds,
           "device": rt.describe(), "time": time.strftime("%Y-%m-%d %H:%M"),
           "sent_per_s": {n: statistics.median(v) for n, v in timings.items()}, "rounds_sent_per_s": timings}
    (study_dir / SPEED_FILE).write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def significance(study: StudyPlan) -> dict[str, dict]:
    """Each point's test hypotheses against the reference point's, by sacreBLEU's paired
    bootstrap (`metrics.paired_bootstrap`): per seed (seed k against seed k), and pooled (the
    seeds both finished, their test sets stacked, so a sentence counts once per seed)."""
    from encdec.data import load_corpus
    from encdec.evaluation import hyps_path
    from encdec.metrics import paired_bootstrap

    def hyps(run: StudyRun) -> list[str]:
        return hyps_path(study.folder / run.folder, "test", study.beam).read_text(encoding="utf-8").split("\n")[:-1]

    done = [r for r in study.runs if is_finished(study.folder, r, study.beam)]
    ref_runs = {r.seed: r for r in done if r.point_name == study.reference}
    if not ref_runs:
        return {}
    data = study.base.data
    pairs = load_corpus(data.source, data.cache_dir).split("test")
    refs = [p.tgt for p in (pairs[: study.limit] if study.limit else pairs)]
    out: dict[str, dict] = {}
    for name in dict.fromkeys(r.point_name for r in done):
        if name == study.reference:
            continue
        mine = {r.seed: r for r in done if r.point_name == name and r.seed in ref_runs}
        if not mine:
            continue
        seeds = sorted(mine)
        per_seed = {k: paired_bootstrap(hyps(ref_runs[k]), hyps(mine[k]), [refs]) for k in seeds}
        pooled = paired_bootstrap([h for k in seeds for h in hyps(ref_runs[k])],
                                  [h for k in seeds for h in hyps(mine[k])], [refs * len(seeds)])
        out[name] = {"seeds": seeds, "per_seed": per_seed, "pooled": pooled}
    return out


def collect(study_dir: Path, runs: list[StudyRun], beam: int) -> list[dict]:
    """One row per finished run, read back from its folder."""
    from encdec.analysis.params import count
    from encdec.checkpoint import read_metrics
    from encdec.evaluation import result_path

    rows = []
    for run in runs:
        folder = study_dir / run.folder
        ev_file = result_path(folder, "test", beam)
        if not ev_file.exists():
            continue
        ev = json.loads(ev_file.read_text())
        records = read_metrics(folder)
        final = next(r["final"] for r in reversed(records) if "final" in r)
        speeds = [r["tok_s"] for r in records if "tok_s" in r]
        m = run.cfg.model
        rows.append({"point": run.point_name, **dict(run.point), "seed": run.seed,
                     "n_enc": m.n_enc_layers, "n_dec": m.n_dec_layers, "d_model": m.d_model, "d_ff": m.d_ff,
                     "h": m.n_heads, "d_k": m.head_dim, "d_v": m.head_dim, "wiring_scheme": m.wiring,
                     "params": count(m)["total"], "steps": final["step"], "dev_ppl": final["dev_ppl"],
                     "dev_bleu": final["dev_score"], "test_bleu": ev["bleu"], "test_chrf": ev["chrf"],
                     "sent_per_s": ev["sent_per_s"], "train_tok_s": statistics.median(speeds) if speeds else math.nan,
                     "train_min": final["train_min"], "total_min": final["total_min"],
                     "best_step": final.get("best_step"), "stop": final.get("stop", "")})
    return rows


def curves(study_dir: Path, runs: list[StudyRun], beam: int) -> dict[str, dict[int, list[float]]]:
    """Per point, the dev BLEU of every evaluation step, one value per finished seed: does an
    order seen at the end of the budget hold along the way?"""
    from encdec.checkpoint import read_metrics

    out: dict[str, dict[int, list[float]]] = {}
    for run in runs:
        if not is_finished(study_dir, run, beam):
            continue
        for rec in read_metrics(study_dir / run.folder):
            if "dev_bleu" in rec:
                out.setdefault(run.point_name, {}).setdefault(rec["step"], []).append(rec["dev_bleu"])
    return out


def aggregate(rows: list[dict], runs: list[StudyRun], together: dict | None = None) -> list[dict]:
    """Per point (in plan order): the architecture columns, then mean and std over seeds of each metric;
    `decode_sent_s` from `time_decoding` (its "sent_per_s" mapping) where given, else None."""
    from encdec.metrics import seed_std

    out = []
    for name in dict.fromkeys(r.point_name for r in runs):
        pts = [r for r in rows if r["point"] == name]
        if not pts:
            continue
        per_run = ("seed", "steps", "best_step", "stop", "delta_vs_ref", "p_vs_ref", "total_min")
        row = {k: pts[0][k] for k in pts[0] if k not in METRICS and k not in per_run}
        row["seeds"] = len(pts)
        row["steps"] = pts[0]["steps"]  # the budget; until converged, the mean of where the runs stopped
        if any(p["stop"].startswith("converged") for p in pts):
            row["steps"] = round(statistics.fmean(p["steps"] for p in pts))
        for k in METRICS:
            vals = [p[k] for p in pts]
            row[k] = statistics.fmean(vals)
            row[f"{k}_std"] = seed_std(vals)
        row["decode_sent_s"] = (together or {}).get(name)
        out.append(row)
    return out


def speed_column(results: list[dict]) -> tuple[str, str]:
    """(key, label) of the decoding speed to report: timed together when every point was, else the
    mean over seeds of each run's own test evaluation."""
    if results and all(r.get("decode_sent_s") is not None for r in results):
        return "decode_sent_s", "sent/s, timed together"
    return "sent_per_s", "test sent/s"


def markdown(results: list[dict], axes: list[str], title: str, footer: str = "") -> str:
    """Table 3 layout: architecture columns, params, steps trained (until converged: the mean of
    where the seeds stopped), dev PPL, dev BLEU, test BLEU (mean ± std), and the paired bootstrap
    against the reference point (pooled over the seeds both points finished, then per seed; the
    cell names those seeds when they are fewer than the point's); `footer` below the table."""
    cols = ["N enc", "N dec", "d_model", "d_ff", "h", "d_k", "d_v"] + (["wiring"] if "wiring" in axes else [])
    speed, speed_label = speed_column(results)
    reference = results[0].get("reference", "") if results else ""
    head = cols + ["params", "steps", "dev PPL", "dev BLEU", "test BLEU", f"Δ BLEU vs {reference} (p pooled; per seed)",
                   speed_label, "seeds"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def pm(r, k, digits=2):
        return f"{r[k]:.{digits}f} ± {r[k + '_std']:.{digits}f}" if r["seeds"] > 1 else f"{r[k]:.{digits}f}"

    for r in results:
        arch = [r["n_enc"], r["n_dec"], r["d_model"], r["d_ff"], r["h"], r["d_k"], r["d_v"]]
        if "wiring" in axes:
            arch.append(r["wiring"])  # the point's value: scheme, states read, SurfaceFusion
        if r.get("delta_vs_ref") is not None:
            paired = r.get("paired_seeds", [])
            only = (f"; seed{'s' if len(paired) > 1 else ''} {', '.join(map(str, paired))} only"
                    if 0 < len(paired) < r["seeds"] else "")  # the reference has fewer seeds than this point
            test = f"{r['delta_vs_ref']:+.2f} (p {r['p_vs_ref']:.3f}; {r['p_vs_ref_per_seed']}{only})"
        else:
            test = "reference" if r["point"] == reference else "–"
        lines.append("| " + " | ".join(str(x) for x in arch) + f" | {r['params'] / 1e6:.2f}M | {r['steps']} | "
                     f"{pm(r, 'dev_ppl')} | {pm(r, 'dev_bleu')} | {pm(r, 'test_bleu')} | {test} | {r[speed]:.1f} | "
                     f"{r['seeds']} |")
    return "\n".join(lines) + "\n" + (f"\n{footer}\n" if footer else "")


def compute_used(rows: list[dict]) -> str:
    """What the finished runs cost: hours of training and of training plus evaluation, summed."""
    if not rows:
        return ""
    train_h = sum(r["train_min"] for r in rows) / 60
    total_h = sum(r["total_min"] for r in rows) / 60
    runs = f"{len(rows)} finished run" + ("s" if len(rows) > 1 else "")
    return (f"Compute: {runs}, {train_h:.1f} h of training, {total_h:.1f} h with the dev "
            "evaluations (summed over runs; per run: train_min and total_min in runs.csv).")


def write_results(study: StudyPlan) -> list[dict]:
    """runs.csv, results.csv/json/md and the plots, from every finished run; returns the results."""
    from encdec.analysis import plots

    folder, runs = study.folder, study.runs
    rows = collect(folder, runs, study.beam)
    tests = significance(study)
    for row in rows:
        test = tests.get(row["point"], {}).get("per_seed", {}).get(row["seed"])
        row["delta_vs_ref"], row["p_vs_ref"] = (test["delta"], test["p"]) if test else (None, None)
    speed_file = folder / SPEED_FILE
    together = json.loads(speed_file.read_text())["sent_per_s"] if speed_file.exists() else None
    results = aggregate(rows, runs, together)
    for r in results:
        test = tests.get(r["point"])
        r["reference"] = study.reference
        r["delta_vs_ref"] = test["pooled"]["delta"] if test else None
        r["p_vs_ref"] = test["pooled"]["p"] if test else None
        r["p_vs_ref_per_seed"] = "/".join(f"{t['p']:.3f}" for t in test["per_seed"].values()) if test else ""
        r["paired_seeds"] = test["seeds"] if test else []
    for name, data in (("runs.csv", rows), ("results.csv", results)):
        if data:
            plots.write_csv(data, folder / name)
    curve = curves(folder, runs, study.beam)
    (folder / "results.json").write_text(json.dumps({"runs": rows, "results": results, "significance": tests,
                                                     "dev_bleu_by_step": curve}, indent=2) + "\n")
    if results:
        (folder / "results.md").write_text(markdown(results, study.axis_names, study.title, compute_used(rows)))
        plots.study_points(results, study.axis_names, folder, study.title, speed_column(results))
        plots.study_curves(curve, folder, study.title)
    return results
