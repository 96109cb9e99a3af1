"""`encdec analyze` on a tiny synthetic run: each command writes its files, and mistakes are one line."""

import csv
import json

import pytest
from typer.testing import CliRunner

from encdec.cli import app

from conftest import CACHE

runner = CliRunner()


def run(*args, **kw):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kw)


@pytest.fixture(scope="module")
def mix_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("analyze")
    out = tmp / "run"
    r = run("train", "--data", "synthetic:reverse", "--preset", "tiny", "--steps", 40, "--out", out, "--no-evaluate",
            "--set", f"data.cache_dir={CACHE}", "--set", "train.max_tokens=512",
            "--set", "train.warmup_steps=10", "--set", "train.eval_every=20", "--set", "model.wiring=mix")
    assert r.exit_code == 0, r.output
    return out


def test_wiring_prints_the_learned_mix_table(mix_run, tmp_path):
    r = run("analyze", "wiring", "--checkpoint", mix_run, "--json")
    assert r.exit_code == 0
    w = json.loads(r.stdout)["mix_weights"]
    assert len(w) == 2 and all(len(row) == 3 and abs(sum(row) - 1) < 1e-3 for row in w)
    assert any(abs(x - 1 / 3) > 1e-3 for row in w for x in row)  # trained: no longer the uniform start
    r = run("analyze", "wiring", "--checkpoint", mix_run, "--out", tmp_path / "wiring")
    assert "dec1" in r.stdout and "enc2" in r.stdout
    assert (tmp_path / "wiring" / "mix_weights_vs_step.png").stat().st_size > 0
    logged = [rec["mix_weights"] for rec in map(json.loads, (mix_run / "metrics.jsonl").read_text().splitlines())
              if "mix_weights" in rec]
    assert len(logged) == 2 and logged[0] != logged[1]  # every evaluation (steps 20, 40) logs the moving weights


@pytest.mark.slow
def test_attention_heads_prune_write_their_files(mix_run, tmp_path):
    r = run("analyze", "attention", "--checkpoint", mix_run, "--out", tmp_path / "att", "--index", 3)
    assert r.exit_code == 0, r.output
    assert {p.name for p in (tmp_path / "att").iterdir()} == {"enc.png", "dec.png", "cross.png", "attention.html"}
    r = run("analyze", "heads", "--checkpoint", mix_run, "--out", tmp_path / "heads", "--sentences", 30)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((tmp_path / "heads" / "heads.csv").open()))
    assert len(rows) == 3 * 2 * 4 and all(r["role"] for r in rows)
    assert (tmp_path / "heads" / "heads.md").read_text().startswith(f"# Head statistics: {mix_run} (30 dev")
    # another weights file of the run: the outputs say which, so a run's milestones tell themselves apart
    r = run("analyze", "prune", "--checkpoint", mix_run, "--out", tmp_path / "prune", "--sentences", 10,
            "--importance-sentences", 20, "--steps", 2, "--weights", "best.safetensors")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "prune" / "summary.json").read_text())
    assert set(summary) >= {"enc", "dec", "cross"} and (tmp_path / "prune" / "prune.png").exists()
    assert summary["weights"] == "best.safetensors"
    r = run("analyze", "heads", "--checkpoint", mix_run, "--out", tmp_path / "heads-best", "--sentences", 30,
            "--weights", "best.safetensors")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "heads-best" / "heads.md").read_text().startswith(
        f"# Head statistics: {mix_run} [best.safetensors] (30 dev")


def test_gradflow_and_latency_write_their_files(mix_run, tmp_path):
    r = run("analyze", "gradflow", "--checkpoint", mix_run, "--out", tmp_path / "g", "--schemes", "final,layerwise",
            "--steps", 3, "--end-run", mix_run, "--batches", 2)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((tmp_path / "g" / "gradflow_summary.csv").open()))
    assert [r["scheme"] for r in rows] == ["final", "layerwise", "mix"]
    assert all(float(r["enc1"]) > 0 for r in rows)
    r = run("analyze", "latency", "--preset", "tiny", "--out", tmp_path / "lat", "--depths", "1,2", "--heads", "1,4",
            "--widths", "32", "--wirings", "dense", "--repeats", 1)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((tmp_path / "lat" / "latency.csv").open()))
    assert [(r["axis"], r["value"]) for r in rows] == [("depth", "1"), ("depth", "2"), ("heads", "1"), ("heads", "4"),
                                                       ("width", "32"), ("wiring", "dense")]
    assert all(float(r["train_step_ms"]) > 0 for r in rows)


def test_gradflow_end_run_without_dropout_is_the_deterministic_model(tmp_path):
    """--no-end-dropout measures a trained model in eval mode: two measurements agree exactly,
    while with the run's dropout (0.3 here) on, as in training, they do not."""
    out = tmp_path / "seed-1"
    r = run("train", "--data", "synthetic:copy", "--preset", "tiny", "--steps", 2, "--out", out, "--no-evaluate",
            "--set", f"data.cache_dir={CACHE}", "--set", "train.max_tokens=256", "--set", "model.dropout=0.3")
    assert r.exit_code == 0, r.output
    rows = []
    for k, flag in enumerate(["--no-end-dropout", "--no-end-dropout", "--end-dropout"]):
        r = run("analyze", "gradflow", "--checkpoint", out, "--out", tmp_path / f"g{k}", "--schemes", "",
                "--end-run", out, "--batches", 2, flag)
        assert r.exit_code == 0, r.output
        (row,) = csv.DictReader((tmp_path / f"g{k}" / "gradflow_summary.csv").open())
        rows.append(row)
    # a study's seed-K folder is named with its parent
    assert rows[0] == rows[1] and rows[0]["phase"] == f"end of {tmp_path.name}/seed-1, no dropout"
    assert rows[2]["phase"] == f"end of {tmp_path.name}/seed-1" and rows[2]["enc1"] != rows[0]["enc1"]


@pytest.mark.parametrize(("args", "fragment"), [
    (["gradflow", "--schemes", "final,sparse"], "unknown schemes ['sparse']"),
    (["attention", "--index", "100000"], "out of range"),
    (["latency", "--depths", "one"], "comma-separated integers"),
    (["latency", "--heads", "3"], "do not divide"),
    (["latency", "--wirings", "final,sparse"], "unknown schemes"),
])
def test_analyze_mistakes_are_one_clear_line(mix_run, args, fragment):
    extra = [] if args[0] == "latency" else ["--checkpoint", mix_run]
    r = run("analyze", *args, *extra)
    assert r.exit_code == 2 and fragment in r.output and "Traceback" not in r.output, r.output


def test_analyze_needs_a_run_folder(tmp_path):
    r = run("analyze", "heads", "--checkpoint", tmp_path / "nope")
    assert r.exit_code == 2 and "not an encdec run folder" in r.output


def test_gradflow_trains_an_admin_model_from_its_profiled_start(tmp_path):
    """gradflow trains each scheme from scratch: an Admin run's model must start from profiled
    residual weights, as `encdec train` starts it, not from plain post-LN's."""
    out = tmp_path / "admin"
    r = run("train", "--data", "synthetic:copy", "--preset", "tiny", "--steps", 2, "--out", out, "--no-evaluate",
            "--set", f"data.cache_dir={CACHE}", "--set", "train.max_tokens=256", "--set", "model.norm=admin")
    assert r.exit_code == 0, r.output
    r = run("analyze", "gradflow", "--checkpoint", out, "--out", tmp_path / "g", "--schemes", "final", "--steps", 2)
    assert r.exit_code == 0, r.output
    assert "Admin: residual weights profiled" in r.output
