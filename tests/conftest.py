import atexit
import dataclasses
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from encdec.config import NORMS, ModelConfig
from encdec.data.batching import collate
from encdec.model import Transformer

# One data cache for the whole session: the synthetic corpora's SentencePiece models are trained
# once, not once per test (tests that check the cache itself use their own tmp_path).
CACHE = Path(tempfile.mkdtemp(prefix="encdec-test-cache-"))
atexit.register(shutil.rmtree, CACHE, ignore_errors=True)

TINY = ModelConfig(vocab_size=50, d_model=32, n_heads=4, d_ff=64, n_enc_layers=2, n_dec_layers=2, dropout=0.0)


def tiny(**changes) -> ModelConfig:
    return dataclasses.replace(TINY, **changes)


def random_batch(seed: int = 0, n: int = 4, vocab: int = 50):
    """A batch with ragged lengths, so both source and target are padded."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for i in range(n):
        s = torch.randint(4, vocab, (3 + 2 * i,), generator=g).tolist()
        t = torch.randint(4, vocab, (2 + 3 * i,), generator=g).tolist()
        pairs.append((s, t))
    return collate(pairs)


@pytest.fixture
def batch():
    return random_batch()


@pytest.fixture(params=NORMS)
def model(request):
    torch.manual_seed(0)
    return Transformer(tiny(norm=request.param)).eval()


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory):
    """A tiny model trained for 150 steps on synthetic:reverse (shared by the export and int8 tests)."""
    from typer.testing import CliRunner

    from encdec.cli import app

    tmp = tmp_path_factory.mktemp("trained-tiny")
    out = tmp / "run"
    args = ["train", "--data", "synthetic:reverse", "--preset", "tiny", "--steps", "150", "--out", str(out),
            "--no-evaluate", "--set", f"data.cache_dir={CACHE}", "--set", "train.max_tokens=1000",
            "--set", "train.warmup_steps=20", "--set", "train.eval_every=1000"]
    r = CliRunner().invoke(app, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return out
