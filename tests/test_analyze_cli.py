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


@pytest.fixture(scope="module")
def emb_z_run(tmp_path_factory):
    """A tiny run of dense over the embeddings and Z (`dense@0+2`)."""
    out = tmp_path_factory.mktemp("analyze") / "dense"
    r = run("train", "--data", "synthetic:reverse", "--preset", "tiny", "--steps", 20, "--out", out, "--no-evaluate",
            "--set", f"data.cache_dir={CACHE}", "--set", "train.max_tokens=512", "--set", "train.warmup_steps=10",
            "--set", "train.eval_every=20", "--set", "model.wiring=dense", "--set", "model.memory_states=[0,2]")
    assert r.exit_code == 0, r.output
    return out


def test_wiring_shows_where_dense_attends(emb_z_run, tmp_path):
    """dense over the embeddings and Z: the cross-attention mass per decoder layer on each state."""
    out = emb_z_run
    r = run("analyze", "wiring", "--checkpoint", out, "--sentences", 20, "--out", tmp_path / "w", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["states"] == [0, 2] and result["sentences"] == 20
    mass = result["attention_mass"]  # decoder layer x state
    assert len(mass) == 2 and all(len(row) == 2 and abs(sum(row) - 1) < 1e-3 for row in mass)
    per_head = result["attention_mass_per_head"]
    assert len(per_head) == 2 and all(len(layer) == 4 for layer in per_head)
    assert json.loads((tmp_path / "w" / "wiring.json").read_text())["attention_mass"] == mass
    r = run("analyze", "wiring", "--checkpoint", out, "--sentences", 20, "--out", tmp_path / "w")
    # the title wraps to the table's width, where the temporary folder's path length decides
    assert "cross-attention mass per state" in " ".join(r.stdout.split())
    assert "emb" in r.stdout and "enc2" in r.stdout


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
    (ratio,) = csv.DictReader((tmp_path / "g" / "attention_over_residual.csv").open())  # one per --end-run
    assert ratio["scheme"] == "mix" and float(ratio["enc1"]) > 0 and float(ratio["enc2"]) > 0
    r = run("analyze", "latency", "--preset", "tiny", "--out", tmp_path / "lat", "--depths", "1,2", "--heads", "1,4",
            "--widths", "32", "--wirings", "dense", "--repeats", 1)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((tmp_path / "lat" / "latency.csv").open()))
    assert [(r["axis"], r["value"]) for r in rows] == [("depth", "1"), ("depth", "2"), ("heads", "1"), ("heads", "4"),
                                                       ("width", "32"), ("wiring", "dense")]
    assert all(float(r["train_step_ms"]) > 0 for r in rows)


def test_gradflow_of_a_run_that_chose_its_states(emb_z_run, tmp_path):
    """A dense run over chosen states: dense and mix train from scratch over those states, the
    other schemes (which refuse the field) over their own."""
    r = run("analyze", "gradflow", "--checkpoint", emb_z_run, "--out", tmp_path / "g", "--schemes", "final,dense,mix",
            "--steps", 2)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((tmp_path / "g" / "gradflow_summary.csv").open()))
    assert [r["scheme"] for r in rows] == ["final", "dense", "mix"]
    # over the embeddings and Z, encoder layer 1 reaches the decoder only through Z
    assert all(float(r["enc1"]) > 0 for r in rows)


def test_gradflow_end_run_may_name_a_weights_file_of_a_run(mix_run, tmp_path):
    """--end-run RUN/milestones/FILE measures those weights: here a copy of the final weights with
    encoder layer 2's self-attention output scaled by 10, which scales its attention/residual ratio."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "run"
    shutil.copytree(mix_run, folder)
    tensors = load_file(folder / "model.safetensors")
    for key in ("encoder.1.self_attn.out.weight", "encoder.1.self_attn.out.bias"):
        tensors[key] = tensors[key] * 10
    (folder / "milestones").mkdir(exist_ok=True)
    save_file(tensors, folder / "milestones" / "scaled.safetensors")
    r = run("analyze", "gradflow", "--checkpoint", folder, "--out", tmp_path / "g", "--schemes", "",
            "--end-run", folder, "--end-run", folder / "milestones" / "scaled.safetensors", "--batches", 1,
            "--no-end-dropout")
    assert r.exit_code == 0, r.output
    plain, scaled = csv.DictReader((tmp_path / "g" / "attention_over_residual.csv").open())
    assert scaled["phase"] == "end of run [milestones/scaled.safetensors], no dropout"
    assert "run [milestones/scaled.safetensors]" in r.stdout  # the printed table keeps the brackets (no markup)
    assert float(scaled["enc1"]) == pytest.approx(float(plain["enc1"]), rel=1e-5)
    assert float(scaled["enc2"]) == pytest.approx(10 * float(plain["enc2"]), rel=1e-3)
    r = run("analyze", "gradflow", "--checkpoint", folder, "--schemes", "", "--end-run", tmp_path / "stray.txt")
    assert r.exit_code == 2 and "not an encdec run folder" in r.output  # a path that is no file: a run folder
    (tmp_path / "stray.txt").write_text("x")
    r = run("analyze", "gradflow", "--checkpoint", folder, "--schemes", "", "--end-run", tmp_path / "stray.txt")
    assert r.exit_code == 2 and "in no encdec run folder" in r.output and "Traceback" not in r.output


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


def test_curves_reads_runs_side_by_side_from_their_folders(mix_run, tmp_path):
    def write(folder, records, files):
        folder.mkdir(parents=True)
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        for name, obj in files.items():
            (folder / name).write_text(json.dumps(obj))

    # an archived run still training: equal best scores at 1,000 and 2,000, a kept milestone scored on test
    write(tmp_path / "a" / "seed-1", [{"step": s, "dev_nll": 2.0, "dev_ppl": p, "dev_bleu": b}
                                      for s, p, b in ((20, 9.0, 1.0), (1000, 7.25, 30.0), (1500, 7.0, 29.0),
                                                      (2000, 6.5, 30.0))],
          {"eval.test.beam4.milestones-step-0001000.json": {"bleu": 12.34}})
    # a run whose criterion is the dev loss (no BLEU subset), finished and scored
    write(tmp_path / "b" / "seed-1", [{"step": 1000, "dev_nll": 2.0, "dev_ppl": 8.5},
                                      {"final": {"step": 1000, "stop": "step budget", "dev_score": -1.9,
                                                 "dev_ppl": 6.69, "final_weights": "best"}}],
          {"eval.test.beam4.json": {"bleu": 21.5, "chrf": 50.0, "bleu_2refs": 24.0}})
    # b lies in a study folder whose --budget-curves scored its milestone of step 2,000 (and another run's)
    (tmp_path / "budget_curves.json").write_text(json.dumps({"scores": {"b/seed-1|2000": 19.5, "a/seed-1|1000": 1.0}}))
    runs = [mix_run, tmp_path / "a" / "seed-1", tmp_path / "b" / "seed-1"]
    r = run("analyze", "curves", *runs, "--every", 20, "--out", tmp_path / "out", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["what"]: row for row in json.loads(r.stdout)}
    names = ["run", "a/seed-1", "b/seed-1"]  # the shortest suffixes that tell the folders apart
    assert list(rows["best dev BLEU"])[1:] == names
    assert [k for k in rows if k.startswith("step")] == ["step 20", "step 40", "step 1,000", "step 1,500",
                                                         "step 2,000"]
    mix = {rec["step"]: rec for rec in map(json.loads, (mix_run / "metrics.jsonl").read_text().splitlines())
           if "dev_ppl" in rec}
    assert rows["step 40"]["run"] == f"{mix[40]['dev_bleu']:.2f} ({mix[40]['dev_ppl']:.2f})"
    assert rows["stopped"]["run"].startswith("step 40")
    assert rows["step 1,000"]["a/seed-1"] == "30.00 (7.25)" and rows["step 1,500"]["b/seed-1"] == ""
    assert rows["best dev BLEU"]["a/seed-1"] == "30.00 (step 1,000)"  # the earliest of equal scores
    assert rows["stopped"]["a/seed-1"] == "unfinished (last evaluation: step 2,000)"
    assert rows["test BLEU, weights of step 1,000"] == {"what": "test BLEU, weights of step 1,000", "run": "",
                                                        "a/seed-1": "12.34", "b/seed-1": ""}  # its own file wins
    assert rows["test BLEU, weights of step 2,000"]["b/seed-1"] == "19.50"
    assert rows["step 1,000"]["b/seed-1"] == "8.50 PPL" and rows["best dev BLEU"]["b/seed-1"] == ""
    assert rows["final weights: dev BLEU (PPL)"]["b/seed-1"] == "6.69 PPL, best"  # not the score -1.9 as a BLEU
    assert rows["test BLEU, final weights"]["b/seed-1"] == "21.50 (2 refs 24.00, chrF 50.00)"
    out = tmp_path / "out"
    assert (out / "curves.md").read_text().splitlines()[0] == "| | run | a/seed-1 | b/seed-1 |"
    assert all((out / f).stat().st_size > 0 for f in ("dev_bleu_vs_step.png", "dev_ppl_vs_step.png", "curves.json"))
    r = run("analyze", "curves", *runs, "--labels", "x,y,z", "--out", tmp_path / "out2")
    assert r.exit_code == 0 and "30.00 (step 1,000)" in r.stdout
    assert (tmp_path / "out2" / "curves.md").read_text().splitlines()[0] == "| | x | y | z |"


def _bad_metrics(d, ok=False):
    """A run folder whose metrics.jsonl, or with `ok` its test result, was cut off mid-line."""
    d.mkdir()
    (d / "metrics.jsonl").write_text('{"step": 1}\n' + ("" if ok else '{"step": \n'))
    (d / "eval.test.beam4.json").write_text('{"bleu": ' if ok else "{}")
    return [d]


@pytest.mark.parametrize(("args", "fragment"), [
    (lambda d, run: [d], "has no metrics.jsonl"),
    (lambda d, run: _bad_metrics(d), "metrics.jsonl line 2 is not JSON"),
    (lambda d, run: _bad_metrics(d, ok=True), "eval.test.beam4.json is not JSON"),
    (lambda d, run: [run, "--labels", "one,two,three"], "needs 1 distinct non-empty names"),
    (lambda d, run: [run, "--every", "0"], "--every must be a positive"),
    (lambda d, run: [run, run], "the same folder twice?"),
])
def test_curves_mistakes_are_one_clear_line(mix_run, tmp_path, args, fragment):
    r = run("analyze", "curves", *args(tmp_path / "run", mix_run), "--out", tmp_path / "out")
    assert r.exit_code == 2 and fragment in r.output and "Traceback" not in r.output, r.output
