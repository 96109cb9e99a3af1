"""`make run`'s recipe follows the machine's training precision (scripts/main_job.sh)."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from encdec import runtime
from encdec.config import run_config

ROOT = Path(__file__).resolve().parents[1]


def planned(precision: str) -> tuple[list[str], str]:
    """The `encdec train` arguments main_job.sh would run with this precision forced, and its reason."""
    env = {**os.environ, runtime.FORCE_PRECISION: precision, "PYTHON": sys.executable, "ENCDEC": "encdec",
           "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(["bash", str(ROOT / "scripts/main_job.sh"), "--print", "--set", "train.seed=3"],
                          env=env, capture_output=True, text=True, check=True)
    args = shlex.split(done.stdout)
    assert args[:2] == ["encdec", "train"]
    return args[2:], done.stderr


def config_of(args: list[str]):
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    minutes = float(args[args.index("--minutes") + 1])
    return run_config("small", "bible:es-en", minutes=minutes, overrides=sets)


@pytest.mark.parametrize("precision, dropout, max_tokens", [("bf16", 0.1, 2000), ("fp32", 0.0, 2000)])
def test_the_main_job_recipe_follows_the_training_precision(precision, dropout, max_tokens):
    args, why = planned(precision)
    cfg = config_of(args)
    assert args[args.index("--out") + 1] == "runs/main"
    assert cfg.train.max_minutes == 30
    assert cfg.model.wiring == "dense"
    assert (cfg.model.dropout, cfg.train.max_tokens) == (dropout, max_tokens)
    assert cfg.train.seed == 3  # further arguments reach `encdec train`, after the recipe's
    assert ("bf16" in why) == (precision == "bf16") and "dropout" in why
