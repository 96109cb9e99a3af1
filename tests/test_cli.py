"""The CLI: user mistakes give one clear message and exit code 2; translate is one line for one."""

import json

import pytest
from typer.testing import CliRunner

from encdec.cli import app

from conftest import CACHE

runner = CliRunner()


def run(*args, **kw):
    return runner.invoke(app, list(args), catch_exceptions=False, **kw)


def test_params_json_and_table():
    r = run("params", "transformer-base", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["total"] == 63_082_496
    r = run("params", "transformer-big")
    assert r.exit_code == 0 and "total" in r.stdout
    assert "16 heads x d_head 64, d_ff 4096, 6+6 layers, vocab 37000" in r.stdout  # the title on one line


def test_help_shows_syntax_and_file_names_verbatim():
    """Help text is Markdown (paragraphs reflow); brackets and <placeholders> must survive."""
    study = run("study", "--help", env={"COLUMNS": "200"}).output
    assert "SCHEME[@S1+S2...][+sfLAMBDA]" in study
    assert "eval.<split>.beam<k>.json" in run("evaluate", "--help", env={"COLUMNS": "200"}).output
    assert "gradflow_<scheme>.csv" in run("analyze", "gradflow", "--help", env={"COLUMNS": "200"}).output
    compare = run("compare", "--help", env={"COLUMNS": "200"}).output
    assert "hyps.<split>.beam<k>.txt" in compare and "hyps..beam" not in compare


def test_user_mistakes_are_one_clear_line(tmp_path):
    cases = [
        (["params", "transformer-bse"], "did you mean"),
        (["train", "--set", "train.lrr=1", "--out", str(tmp_path / "r")], "did you mean train.lr"),
        (["train", "--set", "model.n_heads=3", "--out", str(tmp_path / "r")], "not divisible"),
        (["train", "--preset", "huge", "--out", str(tmp_path / "r")], "unknown preset"),
        (["evaluate", "--checkpoint", str(tmp_path / "nope")], "not an encdec run folder"),
        (["data", "wikipedia:es-en"], "unknown data source"),
        (["train", "--minutes", "0", "--out", str(tmp_path / "r")], "--minutes=0.0 must be > 0"),
        (["train", "--steps", "0", "--out", str(tmp_path / "r")], "--steps=0 must be > 0"),
        (["train", "--epochs", "-1", "--out", str(tmp_path / "r")], "--epochs=-1 must be > 0"),
        (["study", "heads", "--steps", "0", "--out", str(tmp_path / "s")], "the budget must be > 0"),
        (["study", "heads", "--minutes", "0", "--out", str(tmp_path / "s")], "the budget must be > 0"),
    ]
    for args, fragment in cases:
        r = run(*args)
        assert r.exit_code == 2, (args, r.output)
        assert fragment in r.output and "Traceback" not in r.output, (args, r.output)
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()  # nothing started


def test_missing_sword_modules_name_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("SWORD_PATH", str(tmp_path / "empty"))
    r = run("data", "bible:es-en", "--cache-dir", str(tmp_path / "cache"))
    assert r.exit_code == 2 and "apt-get install sword-text-sparv" in r.output


def test_translate_keeps_lines_one_for_one(tmp_path):
    out = tmp_path / "run"
    r = run("train", "--data", "synthetic:copy", "--preset", "tiny", "--steps", "30", "--out", str(out),
            "--no-evaluate", "--set", f"data.cache_dir={CACHE}", "--set", "train.max_tokens=512",
            "--set", "train.warmup_steps=10", "--set", "train.eval_every=1000")
    assert r.exit_code == 0, r.output
    r = run("translate", "--checkpoint", str(out), "--beam", "2", input="s1 s2 s3\n\ns4 s5\n")
    assert r.exit_code == 0
    lines = r.stdout.split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""


def test_ctrl_c_saves_a_checkpoint_and_the_same_command_resumes(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "encdec", "train", "--data", "synthetic:copy", "--preset", "tiny", "--steps", "100000",
           "--out", str(out), "--no-evaluate", "--set", f"data.cache_dir={CACHE}",
           "--set", "train.max_tokens=256", "--set", "train.log_every=5", "--set", "train.eval_every=100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "checkpoint saved" in output and "Traceback" not in output
    state_step = int(output.split("interrupted at step ")[1].split(";")[0])
    assert state_step >= 5 and (out / "checkpoint" / "state.pt").exists()
    resumed = subprocess.run([*cmd[:9], str(state_step + 3), *cmd[10:]], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed {out} at step {state_step}" in resumed.stderr.replace("\n", "")


def test_transformer_base_trains_with_the_papers_recipe(tmp_path):
    out = tmp_path / "base"
    r = run("train", "--preset", "transformer-base", "--data", "synthetic:copy", "--steps", "1", "--out", str(out),
            "--no-evaluate", "--set", f"data.cache_dir={CACHE}", "--set", "train.max_tokens=64",
            "--set", "train.dev_bleu_sentences=0", "--set", "model.n_enc_layers=1", "--set", "model.n_dec_layers=1",
            "--set", "model.d_model=64", "--set", "model.d_ff=128")  # a small model, the paper's recipe
    assert r.exit_code == 0, r.output
    assert "preset transformer-base trains with the paper's" in r.output
    tc = json.loads((out / "config.json").read_text())["train"]
    assert (tc["schedule"], tc["warmup_steps"]) == ("inverse_sqrt", 4000)
    assert tc["lr"] == pytest.approx(64**-0.5 * 4000**-0.5)  # the paper's peak follows the d_model trained


def test_compare_tests_two_systems_on_the_same_sentences(tmp_path):
    from encdec.config import run_config, save_json
    from encdec.data import load_corpus

    pairs = load_corpus("synthetic:copy", CACHE).split("test")
    refs = [p.tgt for p in pairs]
    worse = [" ".join(r.split()[: len(r.split()) // 2]) for r in refs]  # half of every sentence
    base = tmp_path / "base.txt"
    base.write_text("".join(h + "\n" for h in worse))
    run_dir = tmp_path / "run"  # a run folder: its config names the corpus, its hypotheses file is found
    run_dir.mkdir()
    save_json(run_config("tiny", "synthetic:copy", steps=1, overrides=[f"data.cache_dir={CACHE}"]),
              run_dir / "config.json")
    (run_dir / "hyps.test.beam4.txt").write_text("".join(r + "\n" for r in refs))
    r = run("compare", str(base), str(run_dir), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["sentences"] == len(pairs) and doc["bleu"] == 100.0 and doc["baseline_bleu"] < 50
    assert doc["delta"] == round(doc["bleu"] - doc["baseline_bleu"], 2) and doc["p"] < 0.01
    groups = doc["by_source_length"]
    assert sum(g["sentences"] for g in groups) == len(pairs) and len(groups) <= 3
    assert all(g["bleu"] == 100.0 and g["words"][0] <= g["words"][1] for g in groups)
    assert [g["words"][0] for g in groups] == sorted(g["words"][0] for g in groups)
    assert all(a["words"][1] < b["words"][0] for a, b in zip(groups, groups[1:]))  # no length in two groups
    same = run("compare", str(run_dir), str(run_dir))  # a system against itself: no difference
    assert same.exit_code == 0 and "+0.00" in same.stdout and "not significant" in same.stdout
    short = tmp_path / "short.txt"
    short.write_text("one line\n")
    for args, message in (((str(short), str(run_dir)), "the baseline has 1 lines"),
                          ((str(tmp_path / "nope.txt"), str(run_dir)), "no such file or run folder"),
                          ((str(tmp_path), str(run_dir)), "not a run folder"),
                          ((str(run_dir), str(run_dir), "--split", "dev"), "score the run first")):
        bad = run("compare", *args)
        assert bad.exit_code == 2 and message in " ".join(bad.output.split()), bad.output


def test_evaluate_scores_a_kept_milestone_without_touching_the_final_result(trained_tiny, tmp_path):
    import shutil

    import torch

    from encdec.checkpoint import load_run, save_weights
    from encdec.model import Transformer

    folder = tmp_path / "run"
    shutil.copytree(trained_tiny, folder)
    cfg, _ = load_run(folder)
    torch.manual_seed(0)
    (folder / "milestones").mkdir(exist_ok=True)
    save_weights(Transformer(cfg.model), folder / "milestones" / "step-0000000.safetensors")  # an untrained model

    def evaluate(*extra):
        r = run("evaluate", "--checkpoint", str(folder), "--beam", "1", "--limit", "30", "--json", *extra)
        assert r.exit_code == 0, r.output
        return json.loads(r.output[r.output.index("{"):])

    final = evaluate()
    early = evaluate("--weights", "milestones/step-0000000.safetensors")
    assert early["weights"] == "milestones/step-0000000.safetensors" and final["weights"] == "model.safetensors"
    # the hypotheses are named relative to the run folder, so a copied folder's result still finds them
    assert early["hypotheses"] == "hyps.test.beam1.milestones-step-0000000.txt"
    assert early["bleu"] < 1 and final["bleu"] > early["bleu"]  # untrained weights cannot reverse a sequence
    milestone_hyps = folder / "hyps.test.beam1.milestones-step-0000000.txt"
    assert milestone_hyps.read_text() != (folder / "hyps.test.beam1.txt").read_text()
    assert milestone_hyps.read_text().count("\n") == 30
    assert json.loads((folder / "eval.test.beam1.json").read_text())["bleu"] == final["bleu"]
    assert json.loads((folder / "eval.test.beam1.milestones-step-0000000.json").read_text())["bleu"] == early["bleu"]
    for bad, says in ((["--weights", "milestones/step-0001000.safetensors"], "kept weights: milestones/step-0000000"),
                      (["--weights", "../run/model.safetensors"], "inside the run folder")):
        r = runner.invoke(app, ["evaluate", "--checkpoint", str(folder), *bad])
        assert r.exit_code == 2 and says in r.output, r.output
