"""`encdec study --smoke`: the whole pipeline on a synthetic task; resume; print-commands; Ray."""

import csv
import json
import math
import shlex

import pytest
from typer.testing import CliRunner

from encdec.cli import app
from encdec.config import ModelConfig, RunConfig
from encdec.study import markdown, parse_axis, plan

from conftest import CACHE

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def smoke(tmp_path, *extra):
    return run("study", *extra, "--smoke", "--data", "synthetic:reverse", "--set",
               f"data.cache_dir={CACHE}")


def test_plan_is_the_cross_product_and_validates_up_front():
    base = RunConfig()
    runs = plan(base, [parse_axis("heads=1,8"), parse_axis("depth=2,6-1")], [1, 2])
    assert len(runs) == 8
    assert {(r.cfg.model.n_heads, r.cfg.model.head_dim) for r in runs} == {(1, 512), (8, 64)}
    assert {(r.cfg.model.n_enc_layers, r.cfg.model.n_dec_layers) for r in runs} == {(2, 2), (6, 1)}
    assert {r.cfg.train.seed for r in runs} == {1, 2}
    assert runs[0].folder == "heads=1,depth=2/seed-1"
    pinned = RunConfig(model=ModelConfig(d_head=64))  # heads at a fixed d_k, not d_model / h
    assert {(r.cfg.model.n_heads, r.cfg.model.head_dim) for r in plan(pinned, [parse_axis("heads=1,16")], [1])} \
        == {(1, 64), (16, 64)}
    with pytest.raises(ValueError, match="heads=3.*not divisible"):
        plan(base, [parse_axis("heads=3")], [1])
    with pytest.raises(ValueError, match="unknown study axis"):
        parse_axis("layers=1,2")


def test_wiring_points_choose_states_and_surface_fusion():
    base = RunConfig()  # 6 encoder layers: states 0 (embeddings) .. 6 (Z)
    runs = plan(base, [parse_axis("wiring=final,dense@0+6,mix@0+3+6,final+sf0.2,dense@6+sf.1")], [1])
    got = [(r.point_name, r.cfg.model.wiring, r.cfg.model.memory_states, r.cfg.model.surface_fusion) for r in runs]
    assert got == [("wiring=final", "final", None, 0.0), ("wiring=dense@0+6", "dense", (0, 6), 0.0),
                   ("wiring=mix@0+3+6", "mix", (0, 3, 6), 0.0), ("wiring=final+sf0.2", "final", None, 0.2),
                   ("wiring=dense@6+sf.1", "dense", (6,), 0.1)]
    for value, fragment in (("dense@7", "out of range"), ("final@0+6", "used by the mix and dense"),
                            ("dense@", "expected SCHEME"), ("denser", "expected SCHEME"), ("mix+sf1", "must be in")):
        with pytest.raises(ValueError, match=fragment):
            plan(base, [parse_axis(f"wiring={value}")], [1])
    # the table names the point (scheme, states, fusion), not just the scheme
    row = {"point": "wiring=dense@0+6", "wiring": "dense@0+6", "wiring_scheme": "dense", "n_enc": 6, "n_dec": 6,
           "d_model": 512, "d_ff": 2048, "h": 8, "d_k": 64, "d_v": 64, "params": 1e6, "dev_ppl": 9.0,
           "dev_bleu": 20.0, "test_bleu": 21.0, "sent_per_s": 5.0, "seeds": 1, "reference": "wiring=final",
           "steps": 1385}
    assert "| 64 | dense@0+6 | 1.00M | 1385 |" in markdown([row], ["wiring"], "t")
    # a point with 3 seeds against a reference with 1: the Δ is of the one pair, and the cell says so
    row.update(seeds=3, test_bleu_std=0.1, dev_ppl_std=0.1, dev_bleu_std=0.1, delta_vs_ref=1.72, p_vs_ref=0.001,
               p_vs_ref_per_seed="0.001", paired_seeds=[1])
    assert "| +1.72 (p 0.001; 0.001; seed 1 only) |" in markdown([row], ["wiring"], "t")
    row.update(paired_seeds=[1, 2, 3], p_vs_ref_per_seed="0.001/0.002/0.003")
    assert "| +1.72 (p 0.001; 0.001/0.002/0.003) |" in markdown([row], ["wiring"], "t")


def test_smoke_heads_study_table_and_resume(tmp_path, monkeypatch):
    from encdec import checkpoint

    monkeypatch.setattr(checkpoint, "MILESTONE_BASE", 10)  # a milestone at step 20, the smoke run's only evaluation
    out = tmp_path / "heads"
    r = smoke(tmp_path, "heads", "--values", "1,4", "--out", out)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(row["h"], row["d_k"], row["d_v"]) for row in rows] == [("1", "64", "64"), ("4", "16", "16")]
    for row in rows:
        assert row["seeds"] == "2"
        for k in ("params", "dev_ppl", "dev_bleu", "test_bleu", "sent_per_s", "dev_ppl_std", "test_bleu_std"):
            assert math.isfinite(float(row[k])), (k, row)
    md = (out / "results.md").read_text()
    assert "| h | d_k | d_v | params | steps | dev PPL | dev BLEU | test BLEU |" in md and md.count("\n| 2 | 2 |") == 2
    assert md.count("M | 20 | ") == 2  # the budget every run trained
    runs = list(csv.DictReader((out / "runs.csv").open()))
    train_h = sum(float(row["train_min"]) for row in runs) / 60
    assert f"Compute: 4 finished runs, {train_h:.1f} h of training" in md
    assert {p.name for p in out.glob("*.png")} == {"bleu_vs_heads.png", "ppl_vs_params.png", "bleu_vs_speed.png",
                                                  "dev_bleu_vs_step.png"}
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["runs"]) == 4
    for point in ("heads=1", "heads=4"):  # a smoke run evaluates once, at step 20: its dev BLEU
        last = doc["dev_bleu_by_step"][point]["20"]
        assert sorted(last) == sorted(r["dev_bleu"] for r in doc["runs"] if r["point"] == point)
    assert "test sent/s" in md  # each run's own evaluation speed, until the points are timed together
    check_paired_bootstrap(doc, md)
    again = smoke(tmp_path, "heads", "--values", "1,4", "--out", out, "--time-decoding", "--budget-curves")
    assert again.exit_code == 0 and "4 runs (4 finished)" in again.output.replace("\n", "")
    assert "run 1/" not in again.output  # nothing retrained
    curves = json.loads((out / "budget_curves.json").read_text())["curves"]
    for point in ("heads=1", "heads=4"):  # the step-20 milestone is the final weights: the same test BLEU
        assert sorted(curves[point]["milestones"]["20"]) == sorted(bleu for _, bleu in curves[point]["end"])
        assert [step for step, _ in curves[point]["end"]] == [20, 20]
    assert (out / "test_bleu_vs_budget.png").stat().st_size > 0
    for weights in out.glob("*/seed-*/milestones/*.safetensors"):  # a lost machine: the scores stay
        weights.unlink()
    lost = smoke(tmp_path, "heads", "--values", "1,4", "--out", out, "--budget-curves")
    assert lost.exit_code == 0 and "at step 20: test BLEU" not in lost.output.replace("\n", "")  # not rescored
    assert json.loads((out / "budget_curves.json").read_text())["curves"] == curves
    speed = json.loads((out / "decode_speed.json").read_text())
    assert set(speed["sent_per_s"]) == {"heads=1", "heads=4"} and speed["sentences"] == 100
    assert all(len(v) == 3 and min(v) > 0 for v in speed["rounds_sent_per_s"].values())
    md = (out / "results.md").read_text()
    assert "sent/s, timed together" in md
    for point, row in zip(("heads=1", "heads=4"), csv.DictReader((out / "results.csv").open())):
        assert float(row["decode_sent_s"]) == pytest.approx(speed["sent_per_s"][point])
        assert f"| {speed['sent_per_s'][point]:.1f} | 2 |" in md
    other = smoke(tmp_path, "heads", "--values", "1,2", "--out", out)
    assert other.exit_code == 2 and "different plan" in other.output
    bad = smoke(tmp_path, "heads", "--values", "1,4", "--out", tmp_path / "other", "--reference", "heads=8")
    assert bad.exit_code == 2 and "not a point of this study" in bad.output


def test_a_study_grows_by_values_and_seeds_and_keeps_its_runs(tmp_path):
    out = tmp_path / "grow"

    def planned(*args):
        done = smoke(tmp_path, "heads", *args, "--out", out, "--print-commands")
        assert done.exit_code == 0, done.output
        return {cmd.split()[3] for cmd in done.output.splitlines() if cmd.startswith("encdec train")}

    assert planned("--values", "1,4", "--seeds", "1") == {str(out / "heads=1/seed-1"), str(out / "heads=4/seed-1")}
    record = out / "heads=4/seed-1/config.json"
    (out / "heads=4/seed-1/metrics.jsonl").write_text("")  # started: its config.json is now the trainer's record
    record.write_text(record.read_text().replace('"precision": "auto"', '"precision": "fp32"'))
    grown = planned("--values", "1,4,8", "--seeds", "2")
    assert grown == {str(out / f"heads={h}/seed-{k}") for h in (1, 4, 8) for k in (1, 2)}
    assert json.loads((out / "study.json").read_text())["axes"] == [["heads", ["1", "4", "8"]]]
    assert '"precision": "fp32"' in record.read_text()  # an old run is kept as it was
    for shrunk in (("--values", "1,8", "--seeds", "2"), ("--values", "1,4,8", "--seeds", "1"),
                   ("--values", "1,4,8", "--seeds", "2", "--set", "train.lr=1e-3")):
        refused = smoke(tmp_path, "heads", *shrunk, "--out", out, "--print-commands")
        assert refused.exit_code == 2 and "different plan" in refused.output


def check_paired_bootstrap(doc: dict, md: str) -> None:
    """Every point against the reference (the first, heads=1) by sacreBLEU's paired bootstrap, seed k
    against seed k and pooled over seeds: the BLEU it recomputes, the difference, p in (0, 1]."""
    test = doc["significance"]["heads=4"]
    assert list(doc["significance"]) == ["heads=4"] and test["seeds"] == [1, 2]
    bleu = {(row["point"], row["seed"]): row["test_bleu"] for row in doc["runs"]}
    for seed in (1, 2):
        t = test["per_seed"][str(seed)]
        assert t["bleu"] == pytest.approx(bleu["heads=4", seed], abs=0.01)
        assert t["delta"] == pytest.approx(bleu["heads=4", seed] - bleu["heads=1", seed], abs=0.02)
        assert 0 < t["p"] <= 1
    assert 0 < test["pooled"]["p"] <= 1
    assert "Δ BLEU vs heads=1 (p pooled; per seed)" in md and "| reference |" in md


def test_print_commands_runs_are_collected(tmp_path):
    out = tmp_path / "wiring"
    r = smoke(tmp_path, "wiring", "--values", "final,dense", "--seeds", "1", "--out", out, "--print-commands")
    assert r.exit_code == 0, r.output
    commands = [shlex.split(line) for line in r.stdout.splitlines() if line.startswith("encdec train")]
    assert len(commands) == 2
    for i, cmd in enumerate(commands):  # what a scheduler would run
        done = run(*cmd[1:], "--precision", "fp32")  # as parallel_runs.sh appends its EXTRA arguments
        assert done.exit_code == 0, done.output
        if i == 0:  # one run done, one to go: --collect reports it and trains nothing
            partial = smoke(tmp_path, "wiring", "--values", "final,dense", "--seeds", "1", "--out", out, "--collect")
            assert partial.exit_code == 0 and "1 unfinished runs left alone" in partial.output.replace("\n", "")
            # the trainer's record of the run is kept, not rewritten with the plan's precision "auto"
            assert json.loads((out / "wiring=final/seed-1/config.json").read_text())["train"]["precision"] == "fp32"
            assert not (out / "wiring=dense/seed-1/metrics.jsonl").exists()
            assert [row["wiring_scheme"] for row in csv.DictReader((out / "results.csv").open())] == ["final"]
    r = smoke(tmp_path, "wiring", "--values", "final,dense", "--seeds", "1", "--out", out)
    assert r.exit_code == 0 and "2 runs (2 finished)" in r.output.replace("\n", "")
    assert [row["wiring_scheme"] for row in csv.DictReader((out / "results.csv").open())] == ["final", "dense"]


@pytest.mark.slow
def test_study_on_a_local_ray_instance(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e .[dev])")
    out = tmp_path / "depth"
    r = smoke(tmp_path, "depth", "--values", "1,2-1", "--seeds", "1", "--out", out, "--executor", "ray",
              "--cpus-per-run", "1", "--set", "model.norm=pre")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(row["n_enc"], row["n_dec"]) for row in rows] == [("1", "1"), ("2", "1")]
    config = json.loads((out / "depth=2-1/seed-1/config.json").read_text())
    assert config["model"]["norm"] == "pre"  # a --set change reaches every run and the table's title
    assert (out / "results.md").read_text().startswith("### synthetic:reverse, tiny base + model.norm=pre, ")


def test_study_mistakes(tmp_path):
    for args, fragment in ((["grid", "--axis", "heads=1"], "two or more"),
                           (["heads", "--values", "3"], "not divisible"),
                           (["depth", "--values", "two"], "expected an integer"),
                           (["heads", "--executor", "slurm"], "choose local or ray"),
                           (["heads", "--set", "model.n_heads=2"], "the study sets model.n_heads"),
                           (["depth", "--set", "train.seed=7"], "the study sets train.seed"),
                           (["wiring", "--values", "final,dense@0+3", "--set", "model.memory_states=[3]"],
                            "the study sets model.memory_states"),
                           (["wiring", "--values", "dense[0,3]"], "expected SCHEME")):
        r = smoke(tmp_path, *args, "--out", tmp_path / "x")
        assert r.exit_code == 2 and fragment in r.output and "Traceback" not in r.output, (args, r.output)


def test_until_converged_study_plans_runs_with_the_patience_rule_under_a_cap(tmp_path):
    from encdec.checkpoint import run_lock

    out = tmp_path / "conv"
    r = run("study", "heads", "--values", "1,4", "--seeds", "1", "--until-converged", "--steps", "5000",
            "--out", out, "--print-commands", "--data", "synthetic:copy", "--set", f"data.cache_dir={CACHE}")
    assert r.exit_code == 0, r.output
    assert len([line for line in r.stdout.splitlines() if line.startswith("encdec train")]) == 2
    for folder in ("heads=1/seed-1", "heads=4/seed-1"):
        tc = json.loads((out / folder / "config.json").read_text())["train"]
        assert (tc["patience"], tc["schedule"], tc["max_steps"]) == (5, "inverse_sqrt", 5000)
    bad = run("study", "heads", "--until-converged", "--minutes", "5", "--out", tmp_path / "x")
    assert bad.exit_code == 2 and "not --minutes" in bad.output
    doc = json.loads((out / "study.json").read_text())  # as written by an encdec without train.lr_decay:
    del doc["base"]["train"]["lr_decay"]  # a field added later with a default is the same plan
    (out / "study.json").write_text(json.dumps(doc))
    again = run("study", "heads", "--values", "1,4", "--seeds", "1", "--until-converged", "--steps", "5000",
                "--out", out, "--print-commands", "--data", "synthetic:copy", "--set", f"data.cache_dir={CACHE}")
    assert again.exit_code == 0 and again.stdout == r.stdout, again.output
    # --collect says where each unfinished run stands: step, latest and best dev BLEU, patience used
    evals = [(250, 3.0), (500, 7.5), (750, 7.5), (1000, 7.1), (1250, 6.9)]  # best at 500; 750 ties, not better
    records = [{"step": s, "loss": 1.0} for s in range(20, 1301, 20)] + [{"step": s, "dev_nll": 2.0, "dev_bleu": b}
                                                                        for s, b in evals]
    (out / "heads=4/seed-1/metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in records))
    status = run("study", "heads", "--values", "1,4", "--seeds", "1", "--until-converged", "--steps", "5000",
                 "--out", out, "--collect", "--data", "synthetic:copy", "--set", f"data.cache_dir={CACHE}")
    text = " ".join(status.output.split())
    assert status.exit_code == 2 and "no finished runs to report yet" in text
    assert "heads=1/seed-1: not started" in text
    assert ("heads=4/seed-1: stopped at step 1,300 of 5,000, dev BLEU 6.90 at step 1,250 (best 7.50 at step 500; "
            "3 of 5 evaluations without a better one)") in text
    # without a dev BLEU subset a run ranks by dev loss, and so does its progress line
    losses = [(250, 3.0), (500, 2.5), (750, 2.6)]
    (out / "heads=4/seed-1/metrics.jsonl").write_text("".join(json.dumps({"step": s, "dev_nll": v}) + "\n"
                                                              for s, v in losses))
    with run_lock(out / "heads=4/seed-1"):  # and a run some process is training says so
        status = run("study", "heads", "--values", "1,4", "--seeds", "1", "--until-converged", "--steps", "5000",
                     "--out", out, "--collect", "--data", "synthetic:copy", "--set", f"data.cache_dir={CACHE}")
    assert ("heads=4/seed-1: training at step 750 of 5,000, dev loss 2.60 at step 750 (best 2.50 at step 500; "
            "1 of 5 evaluations without a better one)") in " ".join(status.output.split())


def test_a_recipe_that_follows_the_model_follows_each_point(tmp_path):
    """transformer-base trains with the paper's peak lr d_model^-0.5 * 4000^-0.5: a width study on
    it gives each point its own lr, unless --set pins one for all."""
    r = run("study", "width", "--values", "256,1024", "--seeds", "1", "--preset", "transformer-base",
            "--out", tmp_path / "w", "--print-commands", "--data", "synthetic:copy", "--set", f"data.cache_dir={CACHE}")
    assert r.exit_code == 0, r.output
    for d in (256, 1024):
        tc = json.loads((tmp_path / "w" / f"width={d}" / "seed-1" / "config.json").read_text())["train"]
        assert (tc["schedule"], tc["warmup_steps"]) == ("inverse_sqrt", 4000)
        assert math.isclose(tc["lr"], d**-0.5 * 4000**-0.5)
    r = run("study", "width", "--values", "256,1024", "--seeds", "1", "--preset", "transformer-base",
            "--out", tmp_path / "p", "--print-commands", "--data", "synthetic:copy", "--set", f"data.cache_dir={CACHE}",
            "--set", "train.lr=1e-3")
    assert r.exit_code == 0, r.output
    for d in (256, 1024):
        assert json.loads((tmp_path / "p" / f"width={d}" / "seed-1" / "config.json").read_text())["train"]["lr"] == 1e-3


def test_a_study_skips_a_run_another_process_trains_and_reporting_trains_nothing(tmp_path):
    from encdec.checkpoint import run_lock

    out = tmp_path / "busy"
    with run_lock(out / "heads=1/seed-2"):  # as a scheduler's `encdec train` line would hold it
        r = smoke(tmp_path, "heads", "--values", "1", "--out", out)
    text = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert "heads=1/seed-2: being trained by another process; skipped" in text
    assert (out / "heads=1/seed-1/model.safetensors").exists() and not (out / "heads=1/seed-2/checkpoint").exists()
    assert list(csv.DictReader((out / "results.csv").open()))[0]["seeds"] == "1"
    for flag in ("--budget-curves", "--time-decoding"):  # reports on what is finished, trains nothing
        again = smoke(tmp_path, "heads", "--values", "1", "--out", out, flag)
        text = " ".join(again.output.split())
        assert again.exit_code == 0 and f"{flag}: 1 unfinished runs left alone" in text, again.output
        assert "run 1/" not in text and not (out / "heads=1/seed-2/checkpoint").exists()


def test_archive_script_keeps_every_small_result_and_no_weights(tmp_path):
    import subprocess
    from pathlib import Path

    study = tmp_path / "study"
    kept = ["results.md", "results.csv", "results.json", "runs.csv", "study.json", "decode_speed.json",
            "budget_curves.json", "budget_curves.png", "wiring=final/seed-1/config.json",
            "wiring=final/seed-1/metrics.jsonl", "wiring=final/seed-1/eval.test.beam4.json",
            "wiring=final/seed-1/hyps.test.beam4.txt"]
    dropped = ["wiring=final/seed-1/best.safetensors", "wiring=final/seed-1/vocab.model",
               "wiring=final/seed-1/milestones/step-1000.safetensors", "wiring=final/seed-1/checkpoint/config.json",
               "wiring=final/seed-1/snapshots/a.png", "wiring=final/seed-1/train.log"]
    for name in kept + dropped:
        (study / name).parent.mkdir(parents=True, exist_ok=True)
        (study / name).write_text(name)
    script = Path(__file__).resolve().parents[1] / "scripts" / "archive_study.sh"
    done = subprocess.run(["bash", str(script), str(study), str(tmp_path / "docs")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    copied = sorted(str(p.relative_to(tmp_path / "docs")) for p in (tmp_path / "docs").rglob("*") if p.is_file())
    assert copied == sorted(kept)
    assert (tmp_path / "docs" / kept[-1]).read_text() == kept[-1]
    bad = subprocess.run(["bash", str(script), str(tmp_path / "missing"), str(tmp_path / "d")], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr


def test_the_converged_queue_reuses_the_archived_runs_and_leaves_out_finished_ones(tmp_path):
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    script = repo / "scripts" / "converged_queue.sh"
    finished = tmp_path / "converged-dropout" / "final-dropout-0.2"
    finished.mkdir(parents=True)
    (finished / "eval.test.beam4.json").write_text("{}")
    done = subprocess.run(["bash", str(script), "--print"], capture_output=True, text=True,
                          env={**os.environ, "RUNS": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert all(line.startswith("encdec train --out ") for line in done.stdout.splitlines())
    names = [str(Path(line.split()[3]).relative_to(tmp_path)) for line in done.stdout.splitlines()]
    # every planned run, less those finished: in RUNS (dropout 0.2), archived under docs/runs/ (the plateau
    # arm) or under docs/study/ (the wiring study's, and final's three as heads=4), whatever the archive holds today
    planned = [f"converged-wiring/wiring={v}/seed-{k}" for v in ("final", "dense", "layerwise", "mix", "dense@0+3",
                                                               "final+sf0.2") for k in (1, 2, 3)]
    planned += [f"converged-heads/heads={v}/seed-{k}" for v in (1, 4, 8) for k in (1, 2, 3)]
    planned += [f"converged-depth/depth={v}/seed-{k}" for v in ("2", "6", "1-6", "6-1") for k in (1, 2)]
    archived = {str(p.parent.relative_to(repo / "docs" / "study"))
                for p in (repo / "docs" / "study").glob("converged-*/*/seed-*/eval.test.beam4.json")}
    archived |= {f"converged-heads/heads=4/seed-{k}" for k in (1, 2, 3)
                 if f"converged-wiring/wiring=final/seed-{k}" in archived}
    # h=8 with d_k 64 first, then pre-LN final: their --config names a seed-1 folder, yet they are no study's seed 1
    standalone = [run for run in ("converged-heads-dk/heads=8-dhead-64", "converged-norm/final-pre-ln",
                                  "converged-dropout/final-dropout-0.3",
                                  "converged-ceiling/final-dropout-0.2-linear15k",
                                  "converged-dropout/final-dropout-0.4")
                  if not (repo / "docs/runs" / run / "eval.test.beam4.json").exists()]
    assert {f"converged-wiring/wiring={v}/seed-{k}" for v in ("final", "dense") for k in (1, 2, 3)} <= archived
    assert sorted(names) == sorted(standalone + [n for n in planned if n not in archived])
    assert (tmp_path / "converged-heads" / "heads=4" / "seed-3" / "eval.test.beam4.json").exists()
    # the studies seed by seed (every point's first seed before a second; heads and depth, which have no converged
    # run, before wiring's side points), then the standalone arms alternating with the later seeds: with two runs
    # at a time, one core trains the arms, the other the studies
    first = sum(n.endswith("seed-1") for n in names)
    assert names[:first] == [n for n in names if n.endswith("seed-1")]
    assert [names.index(run) for run in standalone] == list(range(first, first + 2 * len(standalone), 2))
    seeds = [int(n.rsplit("seed-", 1)[1]) for n in names if n not in standalone]
    assert seeds == sorted(seeds)
    assert [n.split("/")[0] for n in names if n.endswith("seed-1")] == sorted(
        (n.split("/")[0] for n in names if n.endswith("seed-1")), key=["converged-heads", "converged-depth",
                                                                      "converged-wiring"].index)
    bad = subprocess.run(["bash", str(script), "--nonsense"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr


def test_a_long_study_title_is_wrapped_to_its_figure(tmp_path):
    import matplotlib.pyplot as plt

    from encdec.analysis import plots

    long = "bible:es-en, small base + " + " + ".join(f"train.setting_{i}=value" for i in range(8)) + ", until converged"
    fig, (wide, narrow) = plt.subplots(1, 2, figsize=(8, 3))
    wide.set_title("short", fontsize=10)
    narrow.set_title(long, fontsize=10)
    fig.suptitle(long, fontsize=10)
    plots._save(fig, tmp_path / "f.png")
    assert wide.get_title() == "short"
    for text, inches in ((narrow.title, 4), (fig._suptitle, 8)):  # no line wider than its axes or the figure
        lines = text.get_text().split("\n")
        assert len(lines) > 1 and " ".join(lines) == long
        assert max(map(len, lines)) * 0.55 * 10 <= inches * 72
