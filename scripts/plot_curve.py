"""Plot a run's training curve (train loss, dev perplexity, dev BLEU) from its metrics.jsonl.

usage: .venv/bin/python scripts/plot_curve.py runs/main docs/main_curve.png
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from encdec.checkpoint import read_metrics  # noqa: E402


def main(run: str, out: str) -> None:
    records = read_metrics(Path(run))
    train = [r for r in records if "loss" in r]
    dev = [r for r in records if "dev_ppl" in r and "final" not in r]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot([r["elapsed"] / 60 for r in train], [r["loss"] for r in train])
    axes[0].set(title="train loss (label-smoothed)", xlabel="minutes")
    axes[1].plot([r["elapsed"] / 60 for r in dev], [r["dev_ppl"] for r in dev], marker="o")
    axes[1].set(title="dev perplexity", xlabel="minutes", yscale="log")
    axes[2].plot([r["elapsed"] / 60 for r in dev], [r["dev_bleu"] for r in dev], marker="o")
    axes[2].set(title="dev BLEU (greedy, fixed 300-sentence subset)", xlabel="minutes")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
