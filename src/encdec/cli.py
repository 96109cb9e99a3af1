"""`encdec`: data, train, translate, evaluate, params.

Every user mistake ends in one clear line and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import typer
from rich.table import Table

from encdec.analysis.commands import analyze
from encdec.config import (
    ALPHA,
    BEAM,
    MODEL_PRESETS,
    PRECISIONS,
    WIRINGS,
    DataConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    load_json,
    preset,
    recipe,
    run_config,
)
from encdec.config import until_converged as config_until_converged
from encdec.study_command import study
from encdec.ui import SET_HELP, WEIGHTS, console, fail, log, runtime, show, warn

# help is Markdown: docstring paragraphs reflow, and `[...]` is text (rich markup would eat it)
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode="markdown",
                  help="encdec: a lab for encoder-decoder Transformers (Vaswani et al. 2017) and their wiring.")
app.add_typer(analyze, name="analyze")
app.command()(study)


@app.command()
def data(source: str = typer.Argument("bible:es-en", help="bible:es-en | text:SRC,TGT | synthetic:copy|reverse|sort"),
         as_json: bool = typer.Option(False, "--json", help="Print machine-readable statistics."),
         cache_dir: str | None = typer.Option(None, help="Cache folder (default $ENCDEC_CACHE or ~/.cache/encdec).")):
    """Prepare a corpus (cached) and print per-split counts and length statistics."""
    from encdec.data import load_corpus
    from encdec.data.prepare import split_stats

    try:
        stats = split_stats(load_corpus(source, cache_dir, log=log))
    except ValueError as e:
        fail(str(e))
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
    preset_name: str = typer.Option("small", "--preset", help=f"Model preset: {', '.join(MODEL_PRESETS)}. "
                                    "transformer-base/big train with the paper's recipe (inverse-sqrt schedule, "
                                    "4,000 warm-up steps), the others with the CPU recipe; `encdec params PRESET` "
                                    "says which."),
    data: str = typer.Option("bible:es-en", help="Corpus: bible:es-en | text:SRC,TGT | synthetic:TASK."),
    minutes: float | None = typer.Option(None, help="Training budget in minutes, evaluation excluded (30 if no "
                                                    "budget is given)."),
    steps: int | None = typer.Option(None, help="Training budget in optimizer steps."),
    epochs: int | None = typer.Option(None, help="Training budget in epochs."),
    until_converged: bool = typer.Option(False, "--until-converged",
                                         help="Train until train.patience (default 5) evaluations in a row find no "
                                              "better dev score, under a cap of --steps (default 30,000), with an LR "
                                              "schedule that needs no run length: the inverse square root, or "
                                              "`--set train.schedule=plateau` (halve the LR when train.decay_patience "
                                              "evaluations find no better dev score)."),
    vocab_size: int | None = typer.Option(None, help="Joint vocabulary size (sets model and data)."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    config: Path | None = typer.Option(None, help="Start from this config.json (as written in every run folder) "
                                                  "instead of --preset/--data/--vocab-size; --set still applies."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    precision: str | None = typer.Option(None, help=f"{' | '.join(PRECISIONS)} (default: train.precision). auto: bf16 "
                                                       "autocast on CPUs with AVX512_BF16/AMX, else fp32 "
                                                       "(TF32 products on GPUs); decoding runs fp32 under "
                                                       "auto (faster than bf16 autocast on CPUs)."),
    evaluate_after: bool = typer.Option(True, "--evaluate/--no-evaluate",
                                        help="Score the test split (beam 4) at the end."),
    beam: int = typer.Option(BEAM, help="Beam size for the final test evaluation."),
    eval_limit: int = typer.Option(0, help="Score only the first N test sentences at the end (0 = all)."),
    accum: int | None = typer.Option(None, help="Batches per process per optimizer step (train.accum)."),
    nproc: int = typer.Option(1, help="Launch this many data-parallel processes with torchrun (DDP: gloo on "
                                      "CPU, NCCL on GPU); for several machines call torchrun yourself."),
):
    """Train a model; writes config, checkpoints, metrics and final weights to --out."""
    import torch

    from encdec import distributed
    from encdec.checkpoint import FINAL_WEIGHTS
    from encdec.train import Interrupted, fit

    if nproc > 1:
        cmd = distributed.torchrun_command(nproc, sys.argv[1:])
        log(f"launching {nproc} processes: {' '.join(cmd[1:])}")
        raise typer.Exit(subprocess.call(cmd))
    dist = distributed.from_env()
    for flag, value in (("--minutes", minutes), ("--steps", steps), ("--epochs", epochs)):
        if value is not None and value <= 0:
            fail(f"{flag}={value} must be > 0 (leave it out for no limit of that kind)")
    budget = {"steps": steps or 0, "minutes": minutes or 0.0, "epochs": epochs or 0}
    try:
        if config is not None:
            cfg = load_json(config)
            if any(budget.values()):  # a budget given here replaces the file's
                cfg = replace(cfg, train=replace(cfg.train, max_steps=budget["steps"], max_minutes=budget["minutes"],
                                                 max_epochs=budget["epochs"]))
            cfg = apply_overrides(cfg, list(set_))
        else:
            if not any(budget.values()):
                budget["minutes"] = 30.0
            cfg = run_config(preset_name, data, vocab_size=vocab_size, **budget, overrides=list(set_))
            log(f"preset {preset_name} trains with {recipe(preset_name).describe}"
                + (" (then --set)" if set_ else ""))
        cfg = replace(cfg, train=replace(cfg.train, precision=precision or cfg.train.precision,
                                         accum=cfg.train.accum if accum is None else accum))
        if until_converged:
            if minutes or epochs:
                raise ValueError("--until-converged takes a step cap (--steps), not --minutes or --epochs")
            cfg = config_until_converged(cfg, cap=steps)
            tc = cfg.train
            log(f"until converged: stop after {tc.patience} evaluations ({tc.eval_every} steps apart) without a "
                f"better dev score, at most {tc.max_steps:,} steps; LR schedule {tc.schedule}"
                + (f" (x {tc.lr_decay} after {tc.decay_patience} evaluations without a better score)"
                   if tc.schedule == "plateau" else ""))
        if dist.world > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
            device = f"cuda:{dist.local_rank}"  # one GPU per process
        rt = runtime(device, cfg.train.precision)
        distributed.setup(dist, rt.device.type)
        summary = fit(cfg, out, rt, log=log, progress=sys.stderr.isatty() and dist.is_main, dist=dist)
    except Interrupted as e:
        console.print(f"[yellow]{e}[/]")
        raise typer.Exit(130) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted before training started; nothing to save[/]")
        raise typer.Exit(130) from None
    except ValueError as e:
        fail(str(e))
    finally:
        distributed.cleanup(dist)
    if not dist.is_main:
        return
    log(f"training done: {json.dumps(summary)}")
    if evaluate_after:
        evaluate(checkpoint=out, split="test", beam=beam, alpha=ALPHA, as_json=False, device=device, limit=eval_limit,
                 int8=False, weights=FINAL_WEIGHTS)


@app.command()
def translate(checkpoint: Path = typer.Option(..., help="Run folder written by `encdec train`."),
              beam: int = typer.Option(BEAM, help="Beam size (1 = greedy)."),
              alpha: float = typer.Option(ALPHA, help="Length penalty exponent."),
              int8: bool = typer.Option(False, "--int8", help="Decode with int8 weights (CPU; see `encdec.quantize`)."),
              device: str = typer.Option("auto")):
    """Translate lines from stdin to stdout, exactly one line out for every line in.

    An empty line gives an empty line; invalid UTF-8 is replaced (U+FFFD) and a line too long for
    the model is translated from its beginning, each with a warning on stderr naming the line."""
    from encdec.checkpoint import load_run
    from encdec.data.vocab import Vocab
    from encdec.evaluation import read_lines, translate_lines

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
    lines, bad = read_lines(sys.stdin.buffer.read())
    for n in bad:
        warn(f"line {n}: invalid UTF-8, decoded with replacement characters")
    try:
        out = translate_lines(model, vocab, lines, rt, beam=beam, alpha=alpha, warn=warn)
    except ValueError as e:
        fail(str(e))
    sys.stdout.write("".join(o + "\n" for o in out))


@app.command()
def evaluate(checkpoint: Path = typer.Option(..., help="Run folder written by `encdec train`."),
             split: str = typer.Option("test", help="dev | test"),
             beam: int = typer.Option(BEAM, help="Beam size (1 = greedy)."),
             alpha: float = typer.Option(ALPHA, help="Length penalty exponent."),
             as_json: bool = typer.Option(False, "--json"),
             int8: bool = typer.Option(False, "--int8", help="Decode with int8 weights (CPU; see `encdec.quantize`)."),
             device: str = typer.Option("auto"),
             limit: int = typer.Option(0, help="Score only the first N sentences (0 = all)."),
             weights: str = WEIGHTS):
    """Translate a split, write the hypotheses, print sacreBLEU BLEU and chrF against WEB and WEB+KJV.

    Also writes `eval.<split>.beam<k>.json` to the run folder; weights other than the final ones
    (`--weights`) name the files, e.g. `eval.test.beam4.milestones-step-0008000.json`."""
    from rich.progress import Progress

    from encdec.checkpoint import FINAL_WEIGHTS, load_run
    from encdec.evaluation import score_run

    if split not in ("dev", "test", "train"):
        fail(f"--split={split!r}; choose dev, test or train")
    try:
        cfg, _ = load_run(checkpoint, weights=weights)
        rt = runtime(device, "fp32" if int8 else cfg.train.precision)
        with Progress(console=console, transient=True, disable=not sys.stderr.isatty()) as bar:
            task = bar.add_task(f"translating {split} (beam {beam})", total=None)
            result = score_run(checkpoint, split, rt, beam=beam, alpha=alpha, limit=limit, int8=int8,
                               weights=weights, log=log,
                               on_start=lambda n: bar.update(task, total=n),
                               on_batch=lambda n: bar.advance(task, n))
    except ValueError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print(f"{split}: {result['sentences']} sentences, beam {beam}{', int8' if int8 else ''}"
          f"{'' if weights == FINAL_WEIGHTS else ', weights ' + weights}, "
          f"{result['sent_per_s']} sent/s; "
          f"hypotheses in {Path(checkpoint) / result['hypotheses']}")
    print(f"BLEU = {result['bleu']:.2f}  chrF = {result['chrf']:.2f}   (reference: WEB)   {result['bleu_signature']}")
    if "bleu_2refs" in result:
        print(f"BLEU = {result['bleu_2refs']:.2f}  chrF = {result['chrf_2refs']:.2f}   (references: WEB + KJV)")


@app.command()
def compare(baseline: Path = typer.Argument(..., help="Hypothesis file (one line per sentence) or run folder."),
            system: Path = typer.Argument(..., help="The same for the system tested against the baseline."),
            data: str | None = typer.Option(None, help="Corpus of the references (default: the run folder's; "
                                                       "bible:es-en for two files)."),
            split: str = typer.Option("test", help="dev | test"),
            beam: int = typer.Option(BEAM, help="Which hypotheses a run folder gives: `hyps.<split>.beam<k>.txt`."),
            buckets: int = typer.Option(3, help="Source-length groups of equal size for the BLEU breakdown."),
            as_json: bool = typer.Option(False, "--json")):
    """Is SYSTEM better than BASELINE on the same sentences? BLEU and chrF of each, sacreBLEU's paired
    bootstrap (1,000 resamples; p), and BLEU by source length.

    Each argument is a hypotheses file or a run folder (its `hyps.<split>.beam<k>.txt`, as written by
    `encdec evaluate` and at the end of `encdec train`)."""
    from encdec.data import load_corpus
    from encdec.evaluation import compare as compare_hyps
    from encdec.evaluation import hyps_path

    if split not in ("dev", "test"):
        fail(f"--split={split!r}; choose dev or test")
    if buckets < 1:
        fail(f"--buckets={buckets} must be >= 1")
    files, cache_dir = [], None
    for path in (baseline, system):
        if path.is_dir():
            if not (path / "config.json").exists():
                fail(f"{path} is a folder but not a run folder (no config.json)")
            cfg = load_json(path / "config.json")
            data, cache_dir = data or cfg.data.source, cache_dir or cfg.data.cache_dir
            path = hyps_path(path, split, beam)
            if not path.exists():
                fail(f"{path} does not exist: score the run first (`encdec evaluate --checkpoint "
                     f"{path.parent} --split {split} --beam {beam}`)")
        elif not path.exists():
            fail(f"{path}: no such file or run folder")
        files.append(path.read_text(encoding="utf-8", errors="replace").splitlines())
    try:
        pairs = load_corpus(data or "bible:es-en", cache_dir, log=log).split(split)
        result = compare_hyps(*files, pairs, buckets=buckets)
    except ValueError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print(f"{split}, {result['sentences']} sentences, reference WEB; paired bootstrap, 1,000 resamples")
    print(f"baseline  BLEU {result['baseline_bleu']:6.2f}  chrF {result['baseline_chrf']:6.2f}   {baseline}")
    print(f"system    BLEU {result['bleu']:6.2f}  chrF {result['chrf']:6.2f}   {system}")
    print(f"delta     BLEU {result['delta']:+6.2f}  p {result['p']:.3f}"
          + ("  (significant at 0.05)" if result["p"] < 0.05 else "  (not significant at 0.05)"))
    print("BLEU by source length (words):")
    for b in result["by_source_length"]:
        lo, hi = b["words"]
        print(f"  {lo:>3}-{hi:<3} {b['sentences']:>5} sentences  baseline {b['baseline_bleu']:6.2f}  "
              f"system {b['bleu']:6.2f}  delta {b['bleu'] - b['baseline_bleu']:+6.2f}")


@app.command()
def params(preset_name: str | None = typer.Argument(None, metavar="[PRESET]",
                                                    help=f"One of: {', '.join(MODEL_PRESETS)}; none: all of them."),
           vocab_size: int | None = typer.Option(None, help="Shared vocabulary size (default: the preset's)."),
           wiring: str | None = typer.Option(None, help=f"Cross-attention wiring: {' | '.join(WIRINGS)}."),
           src_len: int = typer.Option(30, help="Source length (tokens) for the cross-attention FLOPs."),
           set_: list[str] = typer.Option([], "--set", help="Model overrides, e.g. --set model.n_heads=16."),
           as_json: bool = typer.Option(False, "--json")):
    """Parameter calculator: count a preset on the meta device (no memory), with a breakdown by
    stack and by kind (embeddings / attention / FFN / norms), the published size where there is
    one, and the cross-attention FLOPs of its wiring. Without PRESET: one line per preset."""
    from encdec.analysis.params import all_presets, calculate, model_table, presets_table

    if preset_name is None:
        rows = all_presets()
        if as_json:
            print(json.dumps(rows, indent=2))
        else:
            show(presets_table(rows))
        return
    if src_len < 1:
        fail(f"--src-len={src_len} must be >= 1")
    try:
        m = preset(preset_name)
        m = replace(m, vocab_size=vocab_size or m.vocab_size)
        cfg = RunConfig(model=m, data=DataConfig(vocab_size=m.vocab_size), train=TrainConfig(max_steps=1))
        extra = [f"model.wiring={wiring}"] if wiring else []
        m = apply_overrides(cfg, extra + [s if s.startswith("model.") else f"model.{s}" for s in set_]).model
    except ValueError as e:
        fail(str(e))
    result = calculate(m, preset_name, src_len)
    if as_json:
        print(json.dumps({"preset": preset_name, "config": m.__dict__, "recipe": recipe(preset_name).name, **result},
                         indent=2, default=str))
        return
    show(model_table(preset_name, m, result))
    print(f"training recipe: {recipe(preset_name).describe}")
    if "cross_attention_flops" in result:
        fl = result["cross_attention_flops"]
        print(f"cross-attention ({m.wiring}, source of {src_len} tokens, {fl['memory_positions']} memory positions): "
              f"{fl['per_target_token'] / 1e6:.2f} MFLOP per target token, "
              f"{fl['per_source_sentence'] / 1e6:.2f} MFLOP per source sentence (K/V once per layer)")


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
