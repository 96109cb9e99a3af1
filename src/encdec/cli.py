"""`encdec`: data, train, translate, evaluate, params.

Every user mistake ends in one clear line and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import typer
from rich.table import Table

from encdec.analysis.commands import analyze
from encdec.config import MODEL_PRESETS, DataConfig, RunConfig, TrainConfig, apply_overrides, load_json, preset
from encdec.ui import console, fail, log, runtime, show

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="encdec: a lab for encoder-decoder Transformers (Vaswani et al. 2017) and their wiring.")
app.add_typer(analyze, name="analyze")
SET_HELP = "Override any config field, e.g. --set train.lr=3e-4 --set model.wiring=layerwise (repeatable)."


def build_config(preset_name: str, data: str, vocab_size: int | None, steps: int, minutes: float, epochs: int,
                 overrides: list[str]) -> RunConfig:
    model = preset(preset_name)
    # the presets' vocabulary sizes are the paper's (for `params`); training learns its own joint
    # vocabulary: 8000 pieces for real corpora, at most 64 for the synthetic tasks
    vs = vocab_size or (64 if data.startswith("synthetic:") else 8000)
    cfg = RunConfig(
        model=replace(model, vocab_size=vs),
        data=DataConfig(source=data, vocab_size=vs),
        train=TrainConfig(max_steps=steps, max_minutes=minutes, max_epochs=epochs),
    )
    return apply_overrides(cfg, overrides)


@app.command()
def data(source: str = typer.Argument("bible:es-en", help="bible:es-en | text:SRC,TGT | synthetic:copy|reverse|sort"),
         as_json: bool = typer.Option(False, "--json", help="Print machine-readable statistics."),
         cache_dir: str | None = typer.Option(None, help="Cache folder (default $ENCDEC_CACHE or ~/.cache/encdec).")):
    """Prepare a corpus (cached) and print per-split counts and length statistics."""
    from encdec.data import load_corpus

    try:
        corpus = load_corpus(source, cache_dir, log=log)
    except ValueError as e:
        fail(str(e))
    stats = {}
    for split in ("train", "dev", "test"):
        pairs = corpus.split(split)
        sw = [len(p.src.split()) for p in pairs]
        tw = [len(p.tgt.split()) for p in pairs]
        stats[split] = {"pairs": len(pairs), "src_words": sum(sw), "tgt_words": sum(tw),
                        "src_mean_len": round(sum(sw) / max(len(sw), 1), 1),
                        "tgt_mean_len": round(sum(tw) / max(len(tw), 1), 1),
                        "src_max_len": max(sw, default=0), "tgt_max_len": max(tw, default=0)}
    if as_json:
        print(json.dumps({"source": source, "splits": stats}, indent=2))
        return
    table = Table(title=f"{source}")
    for col in ("split", "pairs", "src words", "tgt words", "src mean", "tgt mean", "src max", "tgt max"):
        table.add_column(col, justify="right")
    for split, s in stats.items():
        table.add_row(split, *(str(v) for v in s.values()))
    show(table)


@app.command()
def train(
    out: Path = typer.Option(Path("runs/main"), help="Run folder; rerunning the same command resumes it."),
    preset_name: str = typer.Option("small", "--preset", help=f"Model preset: {', '.join(MODEL_PRESETS)}."),
    data: str = typer.Option("bible:es-en", help="Corpus: bible:es-en | text:SRC,TGT | synthetic:TASK."),
    minutes: float = typer.Option(0.0, help="Training budget in minutes, evaluation excluded (30 if none given)."),
    steps: int = typer.Option(0, help="Training budget in optimizer steps (0 = none)."),
    epochs: int = typer.Option(0, help="Training budget in epochs (0 = none)."),
    vocab_size: int | None = typer.Option(None, help="Joint vocabulary size (sets model and data)."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    config: Path | None = typer.Option(None, help="Start from this config.json (as written in every run folder) "
                                                  "instead of --preset/--data/--vocab-size; --set still applies."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    precision: str | None = typer.Option(None, help="auto | fp32 | bf16 (default: train.precision)."),
    evaluate_after: bool = typer.Option(True, "--evaluate/--no-evaluate",
                                        help="Score the test split (beam 4) at the end."),
    beam: int = typer.Option(4, help="Beam size for the final test evaluation."),
    eval_limit: int = typer.Option(0, help="Score only the first N test sentences at the end (0 = all)."),
    accum: int | None = typer.Option(None, help="Batches per process per optimizer step (train.accum)."),
    nproc: int = typer.Option(1, help="Launch this many data-parallel processes with torchrun (DDP: gloo on "
                                      "CPU, NCCL on GPU); for several machines call torchrun yourself."),
):
    """Train a model; writes config, checkpoints, metrics and final weights to --out."""
    import torch

    from encdec import distributed
    from encdec.train import Interrupted, fit

    if nproc > 1:
        _launch_torchrun(nproc)
    d = distributed.from_env()
    try:
        if config is not None:
            cfg = load_json(config)
            if steps or minutes or epochs:  # a budget given here replaces the file's
                cfg = replace(cfg, train=replace(cfg.train, max_steps=steps, max_minutes=minutes, max_epochs=epochs))
            cfg = apply_overrides(cfg, list(set_))
        else:
            if minutes <= 0 and steps <= 0 and epochs <= 0:
                minutes = 30.0
            cfg = build_config(preset_name, data, vocab_size, steps, minutes, epochs, list(set_))
        if precision:
            cfg = replace(cfg, train=replace(cfg.train, precision=precision))
        if accum is not None:
            cfg = replace(cfg, train=replace(cfg.train, accum=accum))
        if d.world > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
            device = f"cuda:{d.local_rank}"  # one GPU per process
        rt = runtime(device, cfg.train.precision)
        distributed.setup(d, rt.device.type)
        summary = fit(cfg, out, rt, log=log, progress=sys.stderr.isatty() and d.is_main, d=d)
    except Interrupted as e:
        console.print(f"[yellow]{e}[/]")
        raise typer.Exit(130) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted before training started; nothing to save[/]")
        raise typer.Exit(130) from None
    except ValueError as e:
        fail(str(e))
    finally:
        distributed.cleanup(d)
    if not d.is_main:
        return
    log(f"training done: {json.dumps(summary)}")
    if evaluate_after:
        evaluate(checkpoint=out, split="test", beam=beam, alpha=0.6, as_json=False, device=device, limit=eval_limit,
                 int8=False)


def _launch_torchrun(nproc: int) -> None:
    """Re-run this very command under torchrun with --nproc removed, and exit with its status."""
    import subprocess

    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "encdec", *args]
    log(f"launching {nproc} processes: {' '.join(cmd[1:])}")
    raise typer.Exit(subprocess.call(cmd))


@app.command()
def translate(checkpoint: Path = typer.Option(..., help="Run folder written by `encdec train`."),
              beam: int = typer.Option(4, help="Beam size (1 = greedy)."),
              alpha: float = typer.Option(0.6, help="Length penalty exponent."),
              int8: bool = typer.Option(False, "--int8", help="Decode with int8 weights (CPU; see `encdec.quantize`)."),
              device: str = typer.Option("auto")):
    """Translate lines from stdin to stdout, one for one (an empty line gives an empty line)."""
    from encdec.checkpoint import load_run
    from encdec.data.vocab import Vocab
    from encdec.decode import translate_ids

    try:
        cfg, model = load_run(checkpoint)
        vocab = Vocab(checkpoint / "vocab.model")
        rt = runtime(device, "fp32" if int8 else cfg.train.precision)  # int8 kernels take fp32 activations
        model.to(rt.device)
        if int8:
            from encdec.quantize import quantize_int8

            model = quantize_int8(model)
    except ValueError as e:
        fail(str(e))
    lines = sys.stdin.read().splitlines()
    ids = vocab.encode([line.strip() for line in lines])
    keep = [i for i, line in enumerate(lines) if line.strip()]
    try:
        hyps = translate_ids(model, [ids[i] for i in keep], rt, beam=beam, alpha=alpha)
    except ValueError as e:
        fail(str(e))
    out = [""] * len(lines)
    for i, h in zip(keep, hyps):
        out[i] = vocab.decode(h)
    sys.stdout.write("".join(o + "\n" for o in out))


@app.command()
def evaluate(checkpoint: Path = typer.Option(..., help="Run folder written by `encdec train`."),
             split: str = typer.Option("test", help="dev | test"),
             beam: int = typer.Option(4, help="Beam size (1 = greedy)."),
             alpha: float = typer.Option(0.6, help="Length penalty exponent."),
             as_json: bool = typer.Option(False, "--json"),
             int8: bool = typer.Option(False, "--int8", help="Decode with int8 weights (CPU; see `encdec.quantize`)."),
             device: str = typer.Option("auto"),
             limit: int = typer.Option(0, help="Score only the first N sentences (0 = all).")):
    """Translate a split, write the hypotheses, print sacreBLEU BLEU and chrF against WEB and WEB+KJV.

    Also writes eval.<split>.beam<k>.json to the run folder."""
    from rich.progress import Progress

    from encdec.checkpoint import load_run
    from encdec.evaluation import score_run

    if split not in ("dev", "test", "train"):
        fail(f"--split={split!r}; choose dev, test or train")
    try:
        cfg, _ = load_run(checkpoint)
        rt = runtime(device, "fp32" if int8 else cfg.train.precision)
        with Progress(console=console, transient=True, disable=not sys.stderr.isatty()) as bar:
            task = bar.add_task(f"translating {split} (beam {beam})", total=None)
            result = score_run(checkpoint, split, rt, beam=beam, alpha=alpha, limit=limit, int8=int8, log=log,
                               on_start=lambda n: bar.update(task, total=n),
                               on_batch=lambda n: bar.advance(task, n))
    except ValueError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print(f"{split}: {result['sentences']} sentences, beam {beam}{', int8' if int8 else ''}, "
          f"{result['sent_per_s']} sent/s; "
          f"hypotheses in {result['hypotheses']}")
    print(f"BLEU = {result['bleu']:.2f}  chrF = {result['chrf']:.2f}   (reference: WEB)   {result['bleu_signature']}")
    if "bleu_2refs" in result:
        print(f"BLEU = {result['bleu_2refs']:.2f}  chrF = {result['chrf_2refs']:.2f}   (references: WEB + KJV)")


@app.command()
def params(preset_name: str | None = typer.Argument(None, metavar="[PRESET]",
                                                    help=f"One of: {', '.join(MODEL_PRESETS)}; none: all of them."),
           vocab_size: int | None = typer.Option(None, help="Shared vocabulary size (default: the preset's)."),
           wiring: str | None = typer.Option(None, help="Cross-attention wiring: final | layerwise | mix | dense."),
           src_len: int = typer.Option(30, help="Source length (tokens) for the cross-attention FLOPs."),
           set_: list[str] = typer.Option([], "--set", help="Model overrides, e.g. --set model.n_heads=16."),
           as_json: bool = typer.Option(False, "--json")):
    """Parameter calculator: count a preset on the meta device (no memory), with a breakdown by
    stack and by kind (embeddings / attention / FFN / norms), the published size where there is
    one, and the cross-attention FLOPs of its wiring. Without PRESET: one line per preset."""
    from encdec.analysis.params import PUBLISHED, count, cross_attention_flops

    if preset_name is None:
        rows = []
        for name, m in MODEL_PRESETS.items():
            c = count(m)
            pub = PUBLISHED.get(name)
            rows.append({"preset": name, "kind": m.kind, "total": c["total"], **c["kinds"],
                         "published": pub[0] if pub else None, "source": pub[1] if pub else None,
                         "deviation": c["total"] / pub[0] - 1 if pub else None})
        if as_json:
            print(json.dumps(rows, indent=2))
            return
        table = Table(title="parameter counts (meta device) against the published sizes")
        for col in ("preset", "kind", "total", "embeddings", "attention", "feed-forward", "norms", "other",
                    "published", "deviation"):
            table.add_column(col, justify="left" if col in ("preset", "kind") else "right")
        for r in rows:
            table.add_row(r["preset"], r["kind"], _millions(r["total"]),
                          *(_millions(r[k]) for k in ("embeddings", "attention", "feed-forward", "norms", "other")),
                          _millions(r["published"]) if r["published"] else "",
                          f"{100 * r['deviation']:+.1f}%" if r["published"] else "")
        show(table)
        return
    try:
        model = preset(preset_name)
        if vocab_size:
            model = replace(model, vocab_size=vocab_size)
        cfg = RunConfig(model=model, data=DataConfig(vocab_size=model.vocab_size), train=TrainConfig(max_steps=1))
        extra = [f"model.wiring={wiring}"] if wiring else []
        cfg = apply_overrides(cfg, extra + [s if s.startswith("model.") else f"model.{s}" for s in set_])
        if src_len < 1:
            raise ValueError(f"--src-len={src_len} must be >= 1")
    except ValueError as e:
        fail(str(e))
    m = cfg.model
    result = count(m)
    pub = PUBLISHED.get(preset_name) if m == MODEL_PRESETS[preset_name] else None
    if pub:
        result["published"] = {"total": pub[0], "source": pub[1], "deviation": result["total"] / pub[0] - 1}
    if m.kind == "encoder-decoder":
        result["cross_attention_flops"] = {"src_len": src_len, **cross_attention_flops(m, src_len)}
    if as_json:
        print(json.dumps({"preset": preset_name, "config": m.__dict__, **result}, indent=2, default=str))
        return
    table = Table(title=f"{preset_name} ({m.kind}): d_model {m.d_model}, {m.n_heads} heads x d_head {m.head_dim}, "
                        f"d_ff {m.d_ff}, {m.n_enc_layers}+{m.n_dec_layers} layers, vocab {m.vocab_size}")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    for name, v in {**result["parts"], **result["per_layer"]}.items():
        table.add_row(name, f"{v:,}")
    table.add_section()
    for name, v in result["kinds"].items():
        table.add_row(f"by kind: {name}", f"{v:,} ({100 * v / result['total']:.1f}%)")
    table.add_section()
    table.add_row("[bold]total", f"[bold]{result['total']:,} ({_millions(result['total'])})")
    if pub:
        table.add_row(f"published ({pub[1]})", f"{_millions(pub[0])} ({100 * result['published']['deviation']:+.1f}%)")
    show(table)
    if "cross_attention_flops" in result:
        fl = result["cross_attention_flops"]
        print(f"cross-attention ({m.wiring}, source of {src_len} tokens, {fl['memory_positions']} memory positions): "
              f"{fl['per_target_token'] / 1e6:.2f} MFLOP per target token, "
              f"{fl['per_source_sentence'] / 1e6:.2f} MFLOP per source sentence (K/V once per layer)")


def _millions(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n:,.0f}"


@app.command()
def export(fmt: str = typer.Argument(..., metavar="FORMAT", help="hf (Hugging Face MarianMT) | ct2 (CTranslate2)."),
           checkpoint: Path = typer.Option(..., help="Run folder written by `encdec train`."),
           out: Path = typer.Option(..., help="Output folder."),
           quantization: str | None = typer.Option(None, help="ct2 only: int8, int8_float32, float16, ... "
                                                              "(default: keep float32).")):
    """Export a final-wiring, post-LN run for serving: a MarianMT folder (config, safetensors,
    SentencePiece tokenizer) that `transformers` loads offline, or a CTranslate2 model converted
    from it by CTranslate2's own converter."""
    from encdec.export import export_ct2, export_hf

    if fmt not in ("hf", "ct2"):
        fail(f"unknown export format {fmt!r}; choose hf or ct2")
    if quantization and fmt != "ct2":
        fail("--quantization applies to ct2 exports only")
    try:
        path = export_hf(checkpoint, out) if fmt == "hf" else export_ct2(checkpoint, out, quantization=quantization)
    except ValueError as e:
        fail(str(e))
    log(f"wrote {path}")
    if fmt == "hf":
        print(f"from transformers import MarianMTModel, MarianTokenizer; "
              f"MarianMTModel.from_pretrained('{path}'); MarianTokenizer.from_pretrained('{path}')")
    else:
        print(f"import ctranslate2; ctranslate2.Translator('{path}')  # source tokens: pieces + '</s>'")


@app.command()
def study(
    axis: str = typer.Argument(..., help="heads | depth | width | wiring | grid (grid: give --axis twice or more)."),
    values: str | None = typer.Option(None, help="Comma-separated values of AXIS (default: the axis's standard set; "
                                                 "depth takes N or ENC-DEC, e.g. 6-1)."),
    axes: list[str] = typer.Option([], "--axis", help="For grid: AXIS=V1,V2 (repeatable), e.g. --axis heads=1,4,8."),
    out: Path | None = typer.Option(None, help="Study folder (default runs/study-AXIS); rerun to resume."),
    preset_name: str = typer.Option("small", "--preset", help="Base model preset."),
    data: str = typer.Option("bible:es-en", help="Corpus."),
    steps: int = typer.Option(1000, help="Training budget of every run, in optimizer steps."),
    minutes: float = typer.Option(0.0, help="Wall-clock budget per run instead of --steps (noisier)."),
    seeds: int = typer.Option(3, help="Seeds per point (1..K)."),
    beam: int = typer.Option(4, help="Beam size of the test evaluation."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    smoke: bool = typer.Option(False, help="Tiny preset, 20 steps, 2 seeds, greedy on 100 test sentences: "
                                           "minutes on 2 cores, to check the whole pipeline."),
    executor: str = typer.Option("local", help="local (this process) | ray (one Ray task per run)."),
    ray_address: str | None = typer.Option(None, help="Ray cluster address (default: start a local instance)."),
    cpus_per_run: int = typer.Option(2, help="CPUs a Ray task asks for (each run also uses that many threads)."),
    print_commands: bool = typer.Option(False, help="Print one `encdec train` command per unfinished run "
                                                    "(for SLURM or any scheduler) and exit; rerun without it "
                                                    "to collect the results."),
    collect_only: bool = typer.Option(False, "--collect", help="Train nothing: report the runs finished so far "
                                                              "(e.g. while a scheduler's runs are going)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    time_decoding: bool = typer.Option(False, help="Before reporting, time every finished point's decoding "
                                                   "together (200 test sentences, 3 interleaved rounds; run on a "
                                                   "quiet machine): runs made hours apart are not comparable."),
):
    """Sweep depth, heads, width or wiring on an equal budget with K seeds; print Table 3.

    Writes results.csv/json/md and plots to the study folder; every run is an ordinary run folder.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from encdec import study as S

    try:
        if axis == "grid":
            if len(axes) < 2:
                raise ValueError("grid needs two or more --axis AXIS=V1,V2 options")
            spec = [S.parse_axis(a) for a in axes]
        else:
            if axes:
                raise ValueError("--axis is for grid studies; for one axis use --values")
            spec = [S.parse_axis(axis if values is None else f"{axis}={values}")]
        varied = {f"model.{k}" for a, vals in spec for k in S.model_changes(a, vals[0])} | {"train.seed"}
        for key in (item.partition("=")[0].strip() for item in set_):
            if key in varied:
                raise ValueError(f"--set {key}=…: the study sets {key} for every run "
                                 "(from its axes, or --seeds for train.seed); drop the --set")
        if seeds < 1 or (steps < 1 and minutes <= 0):
            raise ValueError("--seeds must be >= 1 and the budget (--steps or --minutes) > 0")
        if executor not in ("local", "ray"):
            raise ValueError(f"--executor={executor!r}; choose local or ray")
        limit = 0
        # the table's title names what was changed from the preset (not where the files live)
        changes = "".join(f" + {item}" for item in set_ if not item.startswith("data.cache_dir="))
        if smoke:
            preset_name, steps, minutes, beam, limit = "tiny", 20, 0.0, 1, 100
            seeds = min(seeds, 2)
            set_ = ["train.warmup_steps=5", "train.eval_every=1000", "train.dev_bleu_sentences=50",
                    "train.max_tokens=1000", *set_]
        base = build_config(preset_name, data, None, 0 if minutes > 0 else steps, minutes, 0, list(set_))
        runs = S.plan(base, spec, list(range(1, seeds + 1)))
        study_dir = out or Path(f"runs/study-{axis}")
        S.write_plan(study_dir, base, spec, list(range(1, seeds + 1)), beam, runs)
    except ValueError as e:
        fail(str(e))
    names = [a for a, _ in spec]
    title = (f"{data}, {preset_name} base{changes}, "
             + (f"{steps} steps" if not minutes else f"{minutes} min") + " per run")
    todo = [r for r in runs if not S.is_finished(study_dir, r, beam)]
    log(f"study {study_dir}: {len(runs)} runs ({len(runs) - len(todo)} finished), axes {names}")
    if print_commands:
        import shlex

        for r in todo:
            print(shlex.join(S.train_command(study_dir, r, beam, limit)))
        return
    if collect_only and todo:
        log(f"--collect: {len(todo)} unfinished runs left alone")
        todo = []
    if todo and executor == "ray":
        _study_on_ray(study_dir, todo, beam, limit, ray_address, cpus_per_run)
    elif todo:
        from encdec.evaluation import score_run
        from encdec.train import Interrupted, fit

        rt = runtime(device, base.train.precision)
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn()]
        with Progress(*columns, console=console, disable=not sys.stderr.isatty()) as bar:
            task = bar.add_task("study", total=len(todo))
            for i, r in enumerate(todo, start=1):
                head = f"run {i}/{len(todo)}: {r.folder}"
                bar.update(task, description=head)
                log(head)

                def run_log(msg: str, head: str = head) -> None:  # the current run's latest news on the bar
                    log(msg)
                    bar.update(task, description=f"{head} | {msg[:60]}")

                try:
                    fit(r.cfg, study_dir / r.folder, rt, log=run_log, progress=False)
                    score_run(study_dir / r.folder, "test", rt, beam=beam, limit=limit)
                except Interrupted as e:
                    console.print(f"[yellow]{e}[/]  (rerun the study command to resume)")
                    raise typer.Exit(130) from None
                except ValueError as e:
                    fail(f"{r.folder}: {e}")
                bar.advance(task)
    if time_decoding:
        try:
            S.time_decoding(study_dir, runs, beam, runtime(device, base.train.precision),
                            sentences=min(200, limit) if limit else 200, log=log)
        except ValueError as e:
            fail(str(e))
    results = S.write_results(study_dir, runs, names, beam, title)
    if not results:
        fail("no finished runs to report yet")
    print(S.markdown(results, names, title))
    log(f"wrote {study_dir}/results.csv, results.json, results.md, runs.csv and plots")


def _study_on_ray(study_dir: Path, todo, beam: int, limit: int, address: str | None, cpus: int) -> None:
    """Submit each unfinished run as a Ray task running `python -m encdec train` in a subprocess."""
    from encdec.study import train_command

    try:
        import ray
    except ImportError:
        fail("--executor ray needs Ray: pip install 'ray>=2.9' (or pip install -e .[ray])")
    ray.init(address=address, num_cpus=None if address else max(cpus, 2), include_dashboard=False,
             log_to_driver=False, configure_logging=False)

    @ray.remote(num_cpus=cpus)
    def train_one(cmd: list[str], threads: int) -> tuple[int, str]:
        import os
        import subprocess

        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        return p.returncode, p.stderr[-3000:]

    def command(r) -> list[str]:
        cmd = train_command(study_dir.resolve(), r, beam, limit)
        return [sys.executable, "-m", "encdec", *cmd[1:]]

    log(f"submitting {len(todo)} runs to Ray ({ray.cluster_resources().get('CPU', 0):.0f} CPUs, {cpus} per run)")
    futures = {train_one.remote(command(r), cpus): r for r in todo}
    failed = []
    pending = list(futures)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        rc, err = ray.get(done[0])
        r = futures[done[0]]
        log(f"{r.folder}: {'done' if rc == 0 else f'failed (exit {rc})'}")
        if rc != 0:
            failed.append((r.folder, err.strip().splitlines()[-1:] or ["?"]))
    ray.shutdown()
    if failed:
        fail("runs failed: " + "; ".join(f"{f}: {e[0]}" for f, e in failed))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
