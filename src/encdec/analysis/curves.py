"""Several runs' learning curves side by side, read from their folders alone (metrics.jsonl and the
eval JSON that `encdec evaluate` / `encdec train` wrote): dev BLEU and perplexity at chosen steps,
where each run peaked and why it stopped, and the test BLEU of its kept milestones and of its
final weights. The table a regularisation or schedule comparison reads (docs/findings.md,
section 0); whether a gap is significant is `encdec compare`'s question, not this one's."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from encdec.checkpoint import read_metrics
from encdec.evaluation import result_path


@dataclass(frozen=True, kw_only=True)
class Curve:
    name: str
    dev: dict[int, tuple[float | None, float]]  # step -> (dev BLEU, or None without a BLEU subset; dev PPL)
    final: dict  # the run's stop record ({} while it trains)
    test: dict[int, dict]  # milestone step -> its eval JSON (test split, the asked beam)
    end: dict | None  # the final weights' eval JSON, if scored


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON ({e.msg})") from None


def read_curve(run: Path, name: str, beam: int) -> Curve:
    """One run folder's curve. ValueError (naming the file) when its metrics.jsonl is missing or
    any file it reads is not JSON."""
    if not (run / "metrics.jsonl").is_file():
        raise ValueError(f"{run} has no metrics.jsonl: not a run folder written by encdec train")
    records = read_metrics(run)
    dev = {r["step"]: (r.get("dev_bleu"), r["dev_ppl"]) for r in records if "dev_ppl" in r and "step" in r}
    final = next((r["final"] for r in records if "final" in r), {})
    test = {}
    # a study's run: its milestones were scored by `encdec study --budget-curves` (with the study's beam)
    study_scores = run.parent.parent / "budget_curves.json"
    if study_scores.is_file():
        for key, bleu in _json(study_scores).get("scores", {}).items():
            folder, _, step = key.partition("|")
            if folder == f"{run.parent.name}/{run.name}":
                test[int(step)] = {"bleu": bleu}
    for f in run.glob(f"eval.test.beam{beam}.milestones-step-*.json"):
        test[int(f.name.split("step-")[1].split(".")[0])] = _json(f)
    end_file = result_path(run, "test", beam)
    end = _json(end_file) if end_file.is_file() else None
    return Curve(name=name, dev=dev, final=final, test=dict(sorted(test.items())), end=end)


def names(runs: list[Path]) -> list[str]:
    """Each run's label: its folder name, or as many trailing path parts as tell it apart from the
    others (seed-1 of two studies: wiring=final/seed-1, heads=8/seed-1)."""
    parts = [r.resolve().parts for r in runs]
    k = [1] * len(runs)
    while True:
        labels = ["/".join(p[-n:]) for p, n in zip(parts, k)]
        clash = [i for i, lbl in enumerate(labels) if labels.count(lbl) > 1 and k[i] < len(parts[i])]
        if not clash:
            return labels  # the same folder twice keeps its clash: --labels tells them apart
        for i in clash:
            k[i] += 1


def table(curves: list[Curve], every: int) -> list[dict]:
    """Rows of the comparison: `what` names the row, then one cell per run name. The dev
    evaluations at every multiple of `every` that any run reached, then where each run peaked,
    stopped and ended (the final weights' dev score), then the test BLEU of its milestones and
    final weights. A cell is "" where the run has no such value."""
    def dev_cell(bleu: float | None, ppl: float) -> str:
        return f"{ppl:.2f} PPL" if bleu is None else f"{bleu:.2f} ({ppl:.2f})"

    rows = []
    steps = sorted({s for c in curves for s in c.dev if s % every == 0})
    for s in steps:
        rows.append({"what": f"step {s:,}", **{c.name: dev_cell(*c.dev[s]) if s in c.dev else "" for c in curves}})

    def best(c: Curve) -> str:
        scored = [(b, s) for s, (b, _) in c.dev.items() if b is not None]
        if not scored:
            return ""
        b, s = max(scored, key=lambda bs: (bs[0], -bs[1]))  # the earliest of equal scores
        return f"{b:.2f} (step {s:,})"

    def stop(c: Curve) -> str:
        f = c.final
        if not f:
            # no end record: still training, interrupted, or lost with its machine
            return f"unfinished (last evaluation: step {max(c.dev):,})" if c.dev else "unfinished"
        return f"step {f['step']:,}: {f.get('stop', '')}".rstrip(": ")

    def end_dev(c: Curve) -> str:
        f = c.final
        if "dev_ppl" not in f:
            return ""
        # the final weights' dev score is their dev BLEU where the run evaluates BLEU, else minus the NLL
        bleu = f.get("dev_score") if any(b is not None for b, _ in c.dev.values()) else None
        return dev_cell(bleu, f["dev_ppl"]) + (f", {f['final_weights']}" if f.get("final_weights") else "")

    rows.append({"what": "best dev BLEU", **{c.name: best(c) for c in curves}})
    rows.append({"what": "stopped", **{c.name: stop(c) for c in curves}})
    rows.append({"what": "final weights: dev BLEU (PPL)", **{c.name: end_dev(c) for c in curves}})
    for s in sorted({s for c in curves for s in c.test}):
        rows.append({"what": f"test BLEU, weights of step {s:,}",
                     **{c.name: f"{c.test[s]['bleu']:.2f}" if s in c.test else "" for c in curves}})

    def end_test(c: Curve) -> str:
        e = c.end
        if e is None:
            return ""
        extra = f" (2 refs {e['bleu_2refs']:.2f}, chrF {e['chrf']:.2f})" if "bleu_2refs" in e else ""
        return f"{e['bleu']:.2f}{extra}"

    rows.append({"what": "test BLEU, final weights", **{c.name: end_test(c) for c in curves}})
    return rows


def markdown(rows: list[dict], columns: list[str]) -> str:
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += ["| " + r["what"] + " | " + " | ".join(r[c] for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"
