"""Files the analyses and studies write: matplotlib figures (PNG, Agg backend, no display
needed) and CSV tables."""

from __future__ import annotations

import csv
import statistics
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from encdec.metrics import seed_std  # noqa: E402
from encdec.wiring import state_name  # noqa: E402

ROLE_ABBR = {"positional-prev": "prev", "positional-same": "same", "positional-next": "next", "alignment": "align",
             "eos-sink": "eos", "punctuation": "punct", "broad": "broad", "mixed": "mixed"}


def _wrap_titles(fig) -> None:
    """Break titles wider than their axes (a study's title names every --set) into lines."""
    def fill(text, inches: float) -> None:
        chars = int(inches * 72 / (0.55 * text.get_fontsize()))  # ~0.55 em per character
        if text.get_text() and len(text.get_text()) > chars:
            text.set_text(textwrap.fill(text.get_text(), max(chars, 20)))

    for ax in fig.axes:
        fill(ax.title, ax.get_position().width * fig.get_figwidth())
    if fig._suptitle is not None:
        fill(fig._suptitle, fig.get_figwidth())


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _wrap_titles(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_csv(rows: list[dict], path: Path) -> None:
    """One row per dict; the columns are every key, in order of first appearance."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)


def study_points(results: list[dict], axes: list[str], out: Path, title: str,
                 speed: tuple[str, str]) -> list[Path]:
    """A study's points: BLEU against the axis, dev PPL against parameters, BLEU against decoding
    speed (`speed` = (key, label) of the speed column), each mean ± std over seeds."""
    files = []
    labels = [r["point"] for r in results]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(results) + 2), 3.8))
    x = range(len(results))
    for key, label in (("test_bleu", "test BLEU"), ("dev_bleu", "dev BLEU (subset)")):
        ax.errorbar(x, [r[key] for r in results], yerr=[r[f"{key}_std"] for r in results], fmt="o-", capsize=4,
                    label=label)
    ax.set_xticks(list(x), [lbl.replace(",", "\n") for lbl in labels], fontsize=8)
    ax.set_ylabel("BLEU (mean ± std over seeds)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    files.append(_save(fig, out / f"bleu_vs_{'_'.join(axes)}.png"))
    speed_key, speed_label = speed
    for xkey, ykey, xlabel, ylabel, name in (("params", "dev_ppl", "parameters (M)", "dev perplexity",
                                              "ppl_vs_params.png"),
                                             (speed_key, "test_bleu", f"decoding speed ({speed_label})",
                                              "test BLEU", "bleu_vs_speed.png")):
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        xs = [r[xkey] / (1e6 if xkey == "params" else 1) for r in results]
        ax.errorbar(xs, [r[ykey] for r in results], yerr=[r[f"{ykey}_std"] for r in results], fmt="o", capsize=4)
        for xv, r in zip(xs, results):
            ax.annotate(r["point"], (xv, r[ykey]), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        files.append(_save(fig, out / name))
    return files


def _mean_band(ax, xs: list[int], per_x: list[list[float]], fmt: str, label: str):
    """Plot the mean over seeds at each x with a band of ± one std; returns (line, means)."""
    means = [statistics.fmean(v) for v in per_x]
    stds = [seed_std(v) for v in per_x]
    (line,) = ax.plot(xs, means, fmt, label=label)
    ax.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                    color=line.get_color(), alpha=0.2)
    return line, means


def study_curves(curve: dict[str, dict[int, list[float]]], out: Path, title: str, *,
                 ylabel: str = "dev BLEU (subset, mean ± std over seeds)", file: str = "dev_bleu_vs_step.png",
                 log_y: bool = False) -> Path:
    """Dev BLEU (or what `ylabel` names) against training step, one line per point: the mean over
    seeds, a band of ± one std. Runs stopped by convergence end at different steps; past a seed's
    end the line follows the seeds still training (the marker turns hollow where fewer than all of
    them are left)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, by_step in curve.items():
        steps = sorted(by_step)
        line, means = _mean_band(ax, steps, [by_step[k] for k in steps], "-", name)
        seeds = max(len(v) for v in by_step.values())
        for full in (True, False):
            xs = [k for k in steps if (len(by_step[k]) == seeds) == full]
            ax.plot(xs, [means[steps.index(k)] for k in xs], "o", ms=3, color=line.get_color(),
                    fillstyle="full" if full else "none")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")  # 6, 10, 20 rather than 6x10^0
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out / file)


def budget_curves(curves: dict[str, dict], out: Path, title: str) -> Path:
    """Test BLEU against training steps per point: milestones (mean ± std over seeds, a band)
    and each run's end (x at the mean stopping step, horizontal bar = the range of steps)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in curves.items():
        steps = sorted(c["milestones"], key=int)
        line, _ = _mean_band(ax, [int(k) for k in steps], [c["milestones"][k] for k in steps], "o-", name)
        if c["end"]:
            end_steps, end_bleu = [e[0] for e in c["end"]], [e[1] for e in c["end"]]
            x = statistics.fmean(end_steps)
            ax.errorbar([x], [statistics.fmean(end_bleu)], xerr=[[x - min(end_steps)], [max(end_steps) - x]],
                        yerr=[seed_std(end_bleu)], fmt="s", capsize=3,
                        color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training step (squares: where the runs stopped)")
    ax.set_ylabel("test BLEU (mean ± std over seeds)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out / "test_bleu_vs_budget.png")


def mix_weights(history: list[tuple[int, list[list[float]]]], states: tuple[int, ...], title: str,
                path: Path) -> Path:
    """The `mix` weights against the training step: one panel per decoder layer, one line per state."""
    steps = [step for step, _ in history]
    n_dec = len(history[0][1])
    fig, axes = plt.subplots(1, n_dec, figsize=(3.2 * n_dec + 1, 3.2), squeeze=False, sharey=True)
    for i, ax in enumerate(axes[0]):
        for k, j in enumerate(states):
            ax.plot(steps, [w[i][k] for _, w in history], "o-", ms=3, label=state_name(j))
        ax.set_title(f"decoder layer {i + 1}", fontsize=9)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mix weight")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def head_stats(rows: list[dict], kind: str, title: str, path: Path) -> Path:
    """Panels of layer x head heat maps, one per statistic; the role of each head is written in the first."""
    import numpy as np

    rows = [r for r in rows if r["kind"] == kind]
    L, H = max(r["layer"] for r in rows), max(r["head"] for r in rows)
    stats = ["norm_entropy", "diagonal", "punct", "eos"] if kind == "cross" else \
        ["norm_entropy", "prev", "same", "next", "punct", "eos"]
    fig, axes = plt.subplots(1, len(stats), figsize=(2.2 + 1.9 * len(stats) * max(1, H / 4), 0.6 * L + 1.6),
                             squeeze=False)
    for ax, stat in zip(axes[0], stats):
        m = np.zeros((L, H))
        for r in rows:
            m[r["layer"] - 1, r["head"] - 1] = r[stat]
        ax.imshow(m, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        for r in rows:
            label = ROLE_ABBR[r["role"]] if stat == "norm_entropy" else f"{r[stat]:.2f}"
            ax.text(r["head"] - 1, r["layer"] - 1, label, ha="center", va="center", fontsize=7,
                    color="white" if r[stat] < 0.6 else "black")
        ax.set_title(stat if stat != "norm_entropy" else "entropy / log(n), role", fontsize=9)
        ax.set_xticks(range(H), [str(h + 1) for h in range(H)], fontsize=7)
        ax.set_yticks(range(L), [str(i + 1) for i in range(L)], fontsize=7)
        ax.set_xlabel("head", fontsize=8)
    axes[0][0].set_ylabel("layer")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def prune_curves(rows: list[dict], title: str, path: Path, metric: str = "dev BLEU") -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, color in (("enc", "tab:blue"), ("dec", "tab:orange"), ("cross", "tab:green")):
        pts = [r for r in rows if r["kind"] == kind and "variant" not in r]
        if not pts:
            continue
        ax.plot([100 * r["fraction"] for r in pts], [r["score"] for r in pts], "o-", color=color,
                label={"enc": "encoder self", "dec": "decoder self", "cross": "cross"}[kind])
        for r in rows:
            if r["kind"] == kind and "variant" in r:
                ax.plot(100 * r["fraction"], r["score"], "*", ms=12, color=color)
    ax.set_xlabel("heads pruned (%), least important first\n(* = only the best head per layer kept)")  # fits 6 inches
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def gradflow_steps(records: list[dict], layers: list[str], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in layers:
        ax.plot([r["step"] for r in records], [r[name] for r in records], label=name,
                ls="-" if name.startswith("enc") else "--")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("gradient L2 norm (pre-clip)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def gradflow_overlay(per_scheme: dict[str, dict[str, float]], layers: list[str], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for scheme, values in per_scheme.items():
        ax.plot(range(len(layers)), [values[name] for name in layers], "o-", label=scheme)
    ax.set_xticks(range(len(layers)), layers, rotation=45, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("mean gradient L2 norm")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def latency(rows: list[dict], title: str, path: Path) -> Path:
    axes_names = [a for a in ("depth", "heads", "width", "wiring") if any(r["axis"] == a for r in rows)]
    fig, axes = plt.subplots(1, len(axes_names), figsize=(4.2 * len(axes_names), 3.6), squeeze=False)
    labels = {"depth": "N = encoder = decoder layers", "heads": "heads h (d_model fixed)",
              "width": "d_model (d_ff = 4 d)", "wiring": "cross-attention wiring"}
    for ax, axis in zip(axes[0], axes_names):
        pts = [r for r in rows if r["axis"] == axis]
        x = [str(r["value"]) for r in pts] if axis == "wiring" else [r["value"] for r in pts]
        for key, label in (("encoder_ms", "encoder (1 sentence)"), ("decoder_step_ms", "decoder step (1 token)"),
                           ("train_step_ms", "train step (~3k tokens)")):
            ax.plot(x, [r[key] for r in pts], "o-", label=label)
        ax.set_xlabel(labels[axis])
        ax.set_ylabel("milliseconds (log scale)")
        ax.set_yscale("log")
        if axis == "heads":
            ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
