"""`encdec analyze KIND`: look inside a trained run. Each writes files to --out and prints a summary."""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from encdec.config import WIRINGS
from encdec.ui import WEIGHTS, console, fail, log, runtime, show

analyze = typer.Typer(no_args_is_help=True, help="Attention maps, head roles, head pruning, gradient flow, latency, "
                                                 "wiring weights of a trained run (see docs/findings.md).")

CHECKPOINT = typer.Option(..., "--checkpoint", help="Run folder written by `encdec train`.")
DEVICE = typer.Option("auto", help="auto | cpu | cuda | cuda:N.")


def _load(checkpoint: Path, device: str, weights: str):
    """(cfg, model on device, vocab, runtime) of a run, or a clear error."""
    from encdec.checkpoint import load_run
    from encdec.data.vocab import Vocab

    try:
        cfg, model = load_run(checkpoint, weights=weights)
        vocab = Vocab(checkpoint / "vocab.model")
        rt = runtime(device, cfg.train.precision)
    except ValueError as e:
        fail(str(e))
    return cfg, model.to(rt.device).eval(), vocab, rt


def _name(checkpoint: Path, weights: str, *, full: bool = False) -> str:
    """How titles and summaries name the analysed model: the run folder (its whole path with
    `full`), and the weights file when it is not train's final choice, so that the analyses of
    one run's milestones tell themselves apart."""
    from encdec.checkpoint import FINAL_WEIGHTS

    name = str(checkpoint) if full else checkpoint.name
    return name if weights == FINAL_WEIGHTS else f"{name} [{weights}]"


def _run_and_weights(path: Path) -> tuple[Path, str]:
    """A run folder -> (it, its final weights); a weights file -> (the run folder above it that holds
    a config.json, the file's path inside it), e.g. RUN/milestones/step-0001000.safetensors."""
    from encdec.checkpoint import FINAL_WEIGHTS

    if not path.is_file():
        return path, FINAL_WEIGHTS
    run = next((p for p in path.resolve().parents if (p / "config.json").exists()), None)
    if run is None:
        fail(f"{path} is a file in no encdec run folder (no config.json above it)")
    return run, str(path.resolve().relative_to(run))


def _split_pairs(cfg, vocab, split: str, n: int, seed: int = 0) -> tuple[list, list]:
    """Encoded (src, tgt) pairs of a fixed random subset of `split` (n <= 0: all) and the raw pairs."""
    from encdec.data import load_corpus

    try:
        raw = load_corpus(cfg.data.source, cfg.data.cache_dir, log=log).split(split)
    except ValueError as e:
        fail(str(e))
    if 0 < n < len(raw):
        raw = [raw[i] for i in sorted(random.Random(seed).sample(range(len(raw)), n))]
    pairs = list(zip(vocab.encode([p.src for p in raw]), vocab.encode([p.tgt for p in raw])))
    return pairs, raw


def _table(title: str, rows: list[dict], cols: list[str], fmt: str = "{:.3f}") -> Table:
    """Cells are text, not rich markup: a weights name such as "[best.safetensors]" stays."""
    t = Table(title=escape(title))
    for c in cols:
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(*(fmt.format(r.get(c)) if isinstance(r.get(c), float) else escape(str(r.get(c, ""))) for c in cols))
    return t


@analyze.command()
def attention(checkpoint: Path = CHECKPOINT,
              out: Path = typer.Option(Path("runs/analysis/attention"), help="Output folder."),
              text: str | None = typer.Option(None, help="Source sentence (default: test example --index)."),
              target: str | None = typer.Option(None, help="Target to force (default: the model's greedy output)."),
              index: int = typer.Option(0, help="Test example to show when --text is not given."),
              max_heads: int = typer.Option(16, help="At most this many heads per PNG row."),
              device: str = DEVICE, weights: str = WEIGHTS):
    """Attention maps of one sentence: PNG grids and an offline HTML viewer.

    Writes enc.png, dec.png and cross.png (rows: layers, columns: heads, subword tick labels) and
    attention.html, a self-contained page to browse attention kind, layer and head."""
    from encdec.analysis.attention import KINDS, collect, encode_pair, plot_grid, write_html

    cfg, model, vocab, rt = _load(checkpoint, device, weights)
    if text is None:
        pairs, raw = _split_pairs(cfg, vocab, "test", 0)
        if not 0 <= index < len(raw):
            fail(f"--index={index} is out of range: the test split has {len(raw)} sentences")
        text = raw[index].src
        console.print(f"test example {index}: reference: {raw[index].tgt}")
    src_ids, tgt_ids = encode_pair(vocab, text, target)
    if len(src_ids) + 1 > cfg.model.max_len:
        fail(f"the sentence has {len(src_ids)} pieces; the model takes at most {cfg.model.max_len - 1}")
    maps = collect(model, vocab.pieces, src_ids, tgt_ids)
    files = [plot_grid(maps, kind, out / f"{kind}.png", max_heads=max_heads) for kind in KINDS]
    files.append(write_html(maps, out / "attention.html", title=f"{_name(checkpoint, weights)}: {text[:80]}"))
    print(f"source:      {text}")
    print(f"translation: {vocab.decode(maps.tgt_ids)}")
    for f in files:
        print(f"wrote {f}")


@analyze.command()
def heads(checkpoint: Path = CHECKPOINT,
          out: Path = typer.Option(Path("runs/analysis/heads"), help="Output folder."),
          sentences: int = typer.Option(500, help="Dev sentences to average over (0 = all)."),
          device: str = DEVICE, weights: str = WEIGHTS):
    """Per-head statistics over dev data and a role per head.

    Entropy, previous/same/next-token share, punctuation and `</s>` share, cross-attention
    diagonality; roles by the thresholds in encdec/analysis/heads.py. Writes heads.csv, heads.md
    and a heat map per attention kind."""
    from encdec.analysis import heads as head_roles
    from encdec.analysis import plots

    cfg, model, vocab, rt = _load(checkpoint, device, weights)
    pairs, _ = _split_pairs(cfg, vocab, "dev", sentences)
    t0 = time.time()
    stats = head_roles.measure(model, pairs, head_roles.punctuation_ids(vocab.pieces(list(range(vocab.size)))), rt)
    rows = head_roles.table(stats)
    plots.write_csv(rows, out / "heads.csv")
    names = {"enc": "encoder self-attention", "dec": "decoder self-attention", "cross": "cross-attention"}
    md = [f"# Head statistics: {_name(checkpoint, weights, full=True)} ({len(pairs)} dev sentences)\n",
          head_roles.__doc__.split("Roles")[0].strip(), ""]
    for kind, name in names.items():
        plots.head_stats(rows, kind, f"{name}: {_name(checkpoint, weights)}, {len(pairs)} dev sentences",
                         out / f"heads_{kind}.png")
        cols = ["layer", "head", "norm_entropy", "prev", "same", "next", "punct", "eos", "role"] if kind != "cross" \
            else ["layer", "head", "norm_entropy", "diagonal", "punct", "eos", "role"]
        kr = [r for r in rows if r["kind"] == kind]
        show(_table(name, kr, cols, "{:.2f}"))
        md += [f"## {name}\n", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        md += ["| " + " | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |"
               for r in kr]
        counts: dict[str, int] = {}
        for r in kr:
            counts[r["role"]] = counts.get(r["role"], 0) + 1
        summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        md.append(f"\nRoles: {summary}.\n")
        print(f"{name}: {summary}")
    (out / "heads.md").write_text("\n".join(md) + "\n")
    log(f"{len(pairs)} dev sentences in {time.time() - t0:.0f} s; wrote {out}/heads.csv, heads.md, heads_*.png")


@analyze.command()
def prune(checkpoint: Path = CHECKPOINT,
          out: Path = typer.Option(Path("runs/analysis/prune"), help="Output folder."),
          sentences: int = typer.Option(300, help="Dev sentences scored with BLEU at each pruning level."),
          importance_sentences: int = typer.Option(0, help="Dev sentences for head importance (0 = all)."),
          steps: int = typer.Option(10, help="Pruning levels per attention kind (0%, 1/steps, ..., 100%)."),
          beam: int = typer.Option(1, help="Beam size for the BLEU scoring (1 = greedy)."),
          tolerance: float = typer.Option(0.5, help="BLEU drop that counts as 'no loss' in the summary."),
          device: str = DEVICE, weights: str = WEIGHTS):
    """Head importance and dev BLEU as heads are pruned.

    Importance as in Michel et al. 2019 (mean |dL/d gate| on dev data); heads are pruned least
    important first within each attention kind; also 'keep only the best head per layer'. Writes
    importance.json, prune.csv, prune.png and summary.json."""
    from encdec.analysis import plots
    from encdec.analysis import prune as pruning
    from encdec.decode import translate_ids
    from encdec.metrics import bleu

    if steps < 1 or sentences < 1:
        fail("--steps and --sentences must be >= 1")
    cfg, model, vocab, rt = _load(checkpoint, device, weights)
    imp_pairs, _ = _split_pairs(cfg, vocab, "dev", importance_sentences)
    log(f"head importance over {len(imp_pairs)} dev sentences ...")
    imp = pruning.importance(model, imp_pairs, rt)
    out.mkdir(parents=True, exist_ok=True)
    (out / "importance.json").write_text(json.dumps({k: v.tolist() for k, v in imp.items()}, indent=1) + "\n")
    bleu_pairs, raw = _split_pairs(cfg, vocab, "dev", sentences, seed=1)
    refs = [p.tgt for p in raw]

    def score() -> float:
        hyps = translate_ids(model, [s for s, _ in bleu_pairs], rt, beam=beam)
        return bleu([vocab.decode(h) for h in hyps], [refs]).score

    total = 3 * (steps + 2)
    with Progress(console=console, transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("pruning", total=total)
        def point(r: dict) -> None:
            bar.advance(task)
            log(f"{r['kind']}: {r['heads_pruned']}/{r['heads']} heads pruned"
                f"{' (' + r['variant'] + ')' if 'variant' in r else ''}: dev BLEU {r['score']:.2f}")

        rows = pruning.curve(model, imp, score, steps=steps, on_point=point)
    plots.write_csv(rows, out / "prune.csv")
    plots.prune_curves(rows, f"{_name(checkpoint, weights)}: dev BLEU ({len(bleu_pairs)} sentences, beam {beam}) "
                             "vs heads pruned", out / "prune.png")
    show(_table("dev BLEU as heads are pruned", rows, ["kind", "heads_pruned", "heads", "score", "variant"], "{:.2f}"))
    summary = {}
    for kind in pruning.KINDS:
        n = pruning.prunable(rows, kind, tolerance)
        heads_n = next(r["heads"] for r in rows if r["kind"] == kind)
        summary[kind] = {"prunable": n, "heads": heads_n}
        print(f"{kind}: {n} of {heads_n} heads pruned with dev BLEU within {tolerance} of the full model")
    summary = {"weights": weights, "tolerance": tolerance, "base": rows[0]["score"], **summary}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    log(f"wrote {out}/prune.csv, prune.png, importance.json, summary.json")


@analyze.command()
def gradflow(checkpoint: Path = CHECKPOINT,
             out: Path = typer.Option(Path("runs/analysis/gradflow"), help="Output folder."),
             schemes: str = typer.Option(",".join(WIRINGS), help="Wiring schemes to train from scratch."),
             steps: int = typer.Option(200, help="Training steps per scheme, from the same initial seed."),
             end_runs: list[Path] = typer.Option([], "--end-run", help="Trained run folders whose gradients at the "
                                                                       "end of training to measure (repeatable), or a "
                                                                       "weights file inside one (RUN/milestones/"
                                                                       "step-0001000.safetensors: along training)."),
             batches: int = typer.Option(20, help="Training batches averaged for each --end-run."),
             end_dropout: bool = typer.Option(True, help="Measure --end-run gradients with the run's dropout on, "
                                                          "as in training; --no-end-dropout measures the "
                                                          "deterministic model (runs trained at different "
                                                          "dropout rates then compare)."),
             device: str = DEVICE):
    """Gradient norms per layer and sublayer, per wiring scheme.

    Trains each scheme from the same seed for --steps steps with the --checkpoint run's config and
    data, recording pre-clip gradient norms; --end-run folders add the norms of trained models and,
    per encoder layer, its self-attention output's norm over the residual stream's (post-LN: far
    above 1, the layer's LayerNorm all but erases its input and the gradient to the layers below).
    Writes `gradflow_<scheme>.csv/.png`, gradflow_overlay.png, gradflow_end.png, gradflow_summary.csv,
    attention_over_residual.csv."""
    from dataclasses import replace

    from encdec.analysis import plots
    from encdec.analysis.gradflow import frozen_norms, training_norms
    from encdec.checkpoint import load_run
    from encdec.data.prepare import prepare_data
    from encdec.model import Transformer
    from encdec.runtime import seed_everything
    from encdec.train import initialise

    names = [s.strip() for s in schemes.split(",") if s.strip()]
    bad = [s for s in names if s not in WIRINGS]
    if bad or steps < 1:
        fail(f"unknown schemes {bad}; choose from {', '.join(WIRINGS)}" if bad else "--steps must be >= 1")
    cfg, _, _, rt = _load(checkpoint, device, "model.safetensors")
    data = prepare_data(cfg, log)
    out.mkdir(parents=True, exist_ok=True)
    n_enc, n_dec = cfg.model.n_enc_layers, cfg.model.n_dec_layers
    layers = ["emb"] + [f"enc{i}" for i in range(1, n_enc + 1)] + [f"dec{i}" for i in range(1, n_dec + 1)]
    overlay, summary = {}, []
    for scheme in names:
        log(f"{scheme}: {steps} training steps from scratch ...")
        # the run's chosen states go with mix and dense only (the other schemes refuse the field)
        states = cfg.model.memory_states if scheme in ("mix", "dense") else None
        scfg = replace(cfg, model=replace(cfg.model, wiring=scheme, memory_states=states))
        seed_everything(cfg.train.seed)
        model = Transformer(scfg.model).to(rt.device)
        initialise(model, data, scfg, rt, log)
        records = training_norms(model, data, scfg, rt, steps, log=log)
        plots.write_csv(records, out / f"gradflow_{scheme}.csv")
        plots.gradflow_steps(records, layers, f"{scheme}: gradient norm per layer, first {steps} steps",
                             out / f"gradflow_{scheme}.png")
        overlay[scheme] = {k: sum(r[k] for r in records) / len(records) for k in layers}
        summary.append({"scheme": scheme, "phase": f"steps 1-{steps}", **overlay[scheme]})
    if overlay:
        plots.gradflow_overlay(overlay, layers, f"mean gradient norm per layer over the first {steps} steps",
                               out / "gradflow_overlay.png")
    end, ratios = {}, []
    for run in end_runs:
        run, weights = _run_and_weights(run)
        try:
            rcfg, rmodel = load_run(run, weights=weights)
        except ValueError as e:
            fail(str(e))
        if (rcfg.model.n_enc_layers, rcfg.model.n_dec_layers) != (n_enc, n_dec):
            fail(f"{run} has {rcfg.model.n_enc_layers}+{rcfg.model.n_dec_layers} layers; "
                 f"--checkpoint has {n_enc}+{n_dec}")
        log(f"{run}: gradients of the trained model over {batches} batches ...")
        # a study's run folder is seed-K: name it with its point (wiring=mix/seed-1)
        name = _name(Path(f"{run.parent.name}/{run.name}" if run.name.startswith("seed-") else run.name), weights,
                     full=True)
        grads = frozen_norms(rmodel.to(rt.device), data, rcfg, rt, batches, dropout=end_dropout)
        end[f"{name} ({rcfg.model.wiring})"] = grads
        phase = f"end of {name}" + ("" if end_dropout else ", no dropout")
        summary.append({"scheme": rcfg.model.wiring, "phase": phase, **{k: grads[k] for k in layers}})
        ratios.append({"scheme": rcfg.model.wiring, "phase": phase,
                       **{f"enc{i}": grads[f"enc{i}.attn/residual"] for i in range(1, n_enc + 1)}})
    if end:
        plots.gradflow_overlay(end, layers, "mean gradient norm per layer at the end of training"
                               + ("" if end_dropout else " (dropout off)"),
                               out / "gradflow_end.png")
    plots.write_csv(summary, out / "gradflow_summary.csv")
    show(_table("mean gradient L2 norm per layer", summary, ["scheme", "phase", *layers], "{:.4f}"))
    if ratios:
        plots.write_csv(ratios, out / "attention_over_residual.csv")
        show(_table("encoder self-attention output norm / residual stream norm (--end-run models)", ratios,
                    ["scheme", "phase", *(f"enc{i}" for i in range(1, n_enc + 1))], "{:.2f}"))
    log(f"wrote {out}/gradflow_*.csv and .png")


@analyze.command()
def latency(preset_name: str = typer.Option("small", "--preset", help="Base model; one axis is varied at a time."),
            out: Path = typer.Option(Path("runs/analysis/latency"), help="Output folder."),
            depths: str = typer.Option("1,2,4,6,8", help="N = encoder = decoder layers."),
            heads_list: str = typer.Option("1,2,4,8,16", "--heads", help="Heads at the preset's d_model."),
            widths: str = typer.Option("128,256,512", help="d_model values (d_ff = 4 d_model)."),
            wirings: str = typer.Option("final,layerwise,mix,dense", help="Wiring schemes at the preset's size."),
            src_len: int = typer.Option(30, help="Source tokens per sentence."),
            repeats: int = typer.Option(5, help="Timed repeats per measurement (median)."),
            device: str = DEVICE,
            precision: str = typer.Option("auto", help="auto | fp32 | bf16.")):
    """Latency against depth, heads, d_model and wiring on this device.

    Encoder time per sentence, decoder time per token (KV cache) and training step time, with
    random weights, medians over repeats. Writes latency.csv, latency.md and latency.png."""
    from encdec.analysis import plots
    from encdec.analysis.latency import measure, sweep_configs
    from encdec.config import preset

    def ints(text: str, name: str) -> tuple[int, ...]:
        try:
            vals = tuple(int(x) for x in text.split(",") if x.strip())
        except ValueError:
            fail(f"--{name}={text!r} must be comma-separated integers (or empty to skip the axis)")
        if any(v < 1 for v in vals):
            fail(f"--{name} values must be >= 1")
        return vals

    try:
        base = preset(preset_name)
        rt = runtime(device, precision)
        schemes = tuple(w.strip() for w in wirings.split(",") if w.strip())
        bad = [w for w in schemes if w not in WIRINGS]
        if bad:
            raise ValueError(f"unknown schemes {bad}; choose from {', '.join(WIRINGS)}")
        configs = sweep_configs(base, ints(depths, "depths"), ints(heads_list, "heads"), ints(widths, "widths"),
                                schemes)
    except ValueError as e:
        fail(str(e))
    rows = []
    with Progress(console=console, transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("timing", total=len(configs))
        for axis, value, cfg in configs:
            r = measure(cfg, rt, src_len=src_len, repeats=repeats)
            rows.append({"axis": axis, "value": value, "d_model": cfg.d_model, "n_heads": cfg.n_heads,
                         "layers": cfg.n_enc_layers, **r})
            bar.advance(task)
    plots.write_csv(rows, out / "latency.csv")
    cols = ["axis", "value", "params", "encoder_ms", "decoder_step_ms", "train_step_ms", "train_tok_s"]
    show(_table(f"latency on {rt.describe()} (base {preset_name}, source {src_len} tokens, median of {repeats})",
                rows, cols, "{:.2f}"))
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else f"{r[c]:,}" if c == "params"
                             else str(r[c]) for c in cols) + " |" for r in rows]
    (out / "latency.md").write_text(f"Device: {rt.describe()}\n\n" + "\n".join(md) + "\n")
    plots.latency(rows, f"latency on {rt.describe()}, base {preset_name}", out / "latency.png")
    log(f"wrote {out}/latency.csv, latency.md, latency.png")


@analyze.command()
def wiring(checkpoint: Path = CHECKPOINT, weights: str = WEIGHTS,
           out: Path = typer.Option(Path("runs/analysis/wiring"), help="Output folder (mix: the plot; dense: "
                                                                       "wiring.json)."),
           sentences: int = typer.Option(300, help="dense: dev sentences the attention mass is averaged over "
                                                   "(0 = all)."),
           device: str = DEVICE, as_json: bool = typer.Option(False, "--json")):
    """What each decoder layer reads; the learned weights of `mix`; where `dense` attends.

    For mix: a table of decoder layer x encoder state (0 = the embedding output), and
    mix_weights_vs_step.png, the weights at every evaluation of the run (metrics.jsonl).
    For dense: the same table of the cross-attention mass each decoder layer puts on each state
    it reads (mean over heads and the target positions of --sentences dev sentences, teacher-forced
    on the references), and per head in wiring.json."""
    from encdec.analysis import heads as head_roles
    from encdec.analysis import plots
    from encdec.checkpoint import read_metrics
    from encdec.wiring import memory_states, sources, state_name

    cfg, model, vocab, rt = _load(checkpoint, device, weights)
    m = cfg.model
    result = {"wiring": m.wiring, "reads": {f"dec{i + 1}": list(sources(m, i)) for i in range(m.n_dec_layers)}}
    if m.wiring == "mix":
        result["mix_weights"] = [[round(x, 4) for x in row] for row in model.wiring.mix_weights().tolist()]
        rows, what = result["mix_weights"], "learned mix weights"
    elif m.wiring == "dense":
        pairs, _ = _split_pairs(cfg, vocab, "dev", sentences)
        punct = head_roles.punctuation_ids(vocab.pieces(list(range(vocab.size))))
        mass = head_roles.measure(model, pairs, punct, rt)["cross"].means()["state_mass"]  # (L, H, K)
        result.update(states=list(memory_states(m)), sentences=len(pairs),
                      attention_mass=[[round(x, 4) for x in row] for row in mass.mean(1).tolist()],
                      attention_mass_per_head=[[[round(x, 4) for x in head] for head in layer]
                                               for layer in mass.tolist()])
        rows = result["attention_mass"]
        what = f"cross-attention mass per state (mean over heads, {len(pairs)} dev sentences)"
        out.mkdir(parents=True, exist_ok=True)
        (out / "wiring.json").write_text(json.dumps(result, indent=2) + "\n")
    if as_json:
        print(json.dumps(result, indent=2))
        return
    if m.wiring not in ("mix", "dense"):
        for layer, src in result["reads"].items():
            print(f"{layer} reads " + ", ".join("embeddings" if j == 0 else f"enc{j}" for j in src))
        return
    t = Table(title=escape(f"{_name(checkpoint, weights, full=True)}: {what} "
                           "(rows: decoder layer; columns: encoder state)"))
    t.add_column("decoder layer")
    for j in memory_states(m):
        t.add_column(state_name(j), justify="right")
    for i, row in enumerate(rows):
        t.add_row(f"dec{i + 1}", *(f"{x:.3f}" for x in row))
    show(t)
    if m.wiring == "dense":
        print(f"wrote {out / 'wiring.json'} (per head: attention_mass_per_head)")
        return
    history = [(r["step"], r["mix_weights"]) for r in read_metrics(checkpoint) if "mix_weights" in r]
    if history:
        path = plots.mix_weights(history, memory_states(m), f"{checkpoint.name}: learned mix weights during training",
                                 out / "mix_weights_vs_step.png")
        print(f"wrote {path}")
    else:
        print("metrics.jsonl holds no mix weights per evaluation (a run from before they were logged)")


@analyze.command()
def curves(runs: list[Path] = typer.Argument(..., help="Run folders written by `encdec train` (or their archived "
                                                       "copies: metrics.jsonl and eval JSON are all it reads)."),
           out: Path = typer.Option(Path("runs/analysis/curves"), help="Output folder: curves.md, curves.json "
                                                                      "and the two plots."),
           every: int = typer.Option(1000, help="The table's dev rows: the evaluations at multiples of this step."),
           labels: str = typer.Option("", help="Comma-separated names of the runs, in order (default: the "
                                               "shortest path suffix that tells the folders apart)."),
           beam: int = typer.Option(4, help="Which test results to read: those of this beam size "
                                            "(eval.test.beam4*.json for 4)."),
           as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON instead of the table.")):
    """Learning curves of several runs side by side: dev BLEU (dev PPL) along training, where each
    run peaked and why it stopped, test BLEU of its milestones and final weights.

    Reads only the run folders (metrics.jsonl; eval.test.beam4*.json as `encdec train` and
    `encdec evaluate --weights milestones/step-…` write them; for a study's run, the milestone
    scores of the study's budget_curves.json), so it works on runs in flight and on archived ones.
    Writes curves.md and curves.json (the same table), dev_bleu_vs_step.png and
    dev_ppl_vs_step.png. Whether a difference is significant: `encdec compare A B`."""
    from encdec.analysis import curves as cv
    from encdec.analysis import plots

    if every < 1:
        fail(f"--every must be a positive number of steps, got {every}")
    names = [n.strip() for n in labels.split(",")] if labels else cv.names(runs)
    if not labels and len(set(names)) != len(names):
        fail(f"two runs have one name ({', '.join(names)}): the same folder twice? Name them with --labels")
    if len(names) != len(runs) or len(set(names)) != len(names) or not all(names):
        fail(f"--labels needs {len(runs)} distinct non-empty names, one per run, got {labels!r}")
    try:
        found = [cv.read_curve(run, name, beam) for run, name in zip(runs, names)]
    except ValueError as e:
        fail(str(e))
    rows = cv.table(found, every)
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        t = Table(title=f"learning curves: dev BLEU (dev PPL) at steps that are multiples of {every:,}")
        t.add_column("")
        for n in names:
            t.add_column(n, justify="right")
        for r in rows:
            t.add_row(r["what"], *(r[n] for n in names))
        show(t)
    out.mkdir(parents=True, exist_ok=True)
    (out / "curves.md").write_text(cv.markdown(rows, names))
    (out / "curves.json").write_text(json.dumps({"runs": {n: str(r) for n, r in zip(names, runs)}, "rows": rows},
                                                indent=2) + "\n")
    written = [out / "curves.md", out / "curves.json"]
    bleu = {c.name: {s: [b] for s, (b, _) in c.dev.items() if b is not None} for c in found}
    if any(bleu.values()):
        written.append(plots.study_curves({n: c for n, c in bleu.items() if c}, out, "dev BLEU along training",
                                          ylabel="dev BLEU"))
    ppl = {c.name: {s: [p] for s, (_, p) in c.dev.items()} for c in found if c.dev}
    if ppl:
        written.append(plots.study_curves(ppl, out, "dev perplexity along training", ylabel="dev perplexity (log)",
                                          file="dev_ppl_vs_step.png", log_y=True))
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr if as_json else sys.stdout)
