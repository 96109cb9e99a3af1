import json
import math
from dataclasses import replace

import pytest
import torch

from encdec import checkpoint as ckpt
from encdec.checkpoint import load_run, read_metrics
from encdec.config import DataConfig, RunConfig, TrainConfig, preset
from encdec.data import load_corpus
from encdec.data.vocab import Vocab
from encdec.decode import translate_ids
from encdec.runtime import Runtime
from encdec.train import fit

from conftest import CACHE, random_batch

RT = Runtime.create("cpu", "fp32")


def copy_config(tmp_path, cache=CACHE, **train) -> RunConfig:
    base = dict(max_steps=20, max_tokens=512, lr=3e-3, warmup_steps=10, schedule="linear", eval_every=1000,
                dev_bleu_sentences=0, log_every=1)
    base.update(train)
    return RunConfig(model=preset("tiny"), data=DataConfig(source="synthetic:copy", vocab_size=64,
                                                           cache_dir=str(cache)),
                     train=TrainConfig(**base))


def losses(run) -> list[float]:
    return [r["loss"] for r in read_metrics(run) if "loss" in r]


def test_twenty_steps_lower_the_loss(tmp_path):
    fit(copy_config(tmp_path), tmp_path / "run", RT, log=lambda m: None, progress=False)
    ls = losses(tmp_path / "run")
    assert len(ls) == 20 and sum(ls[-5:]) / 5 < 0.8 * sum(ls[:5]) / 5


def dropout_config(tmp_path) -> RunConfig:
    cfg = copy_config(tmp_path, max_steps=8)
    return replace(cfg, model=replace(cfg.model, dropout=0.1))  # dropout: the RNG state must be restored too


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One uninterrupted 8-step run with dropout, which the resume tests compare against."""
    run = tmp_path_factory.mktemp("straight") / "run"
    fit(dropout_config(run.parent), run, RT, log=lambda m: None, progress=False)
    return run


def test_resume_reproduces_the_uninterrupted_losses(tmp_path, straight):
    cfg = dropout_config(tmp_path)
    first = fit(cfg, tmp_path / "resumed", RT, log=lambda m: None, progress=False, stop_after_steps=3)
    assert first == {"stopped_at": 3}
    fit(cfg, tmp_path / "resumed", RT, log=lambda m: None, progress=False)
    assert losses(tmp_path / "resumed") == losses(straight)
    a, b = load_run(straight)[1], load_run(tmp_path / "resumed")[1]
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_admin_profiles_a_fresh_run_once_and_a_resumed_run_keeps_its_learned_weights(tmp_path):
    """norm=admin: the first training batch sets the residual weights before step 1; a resumed
    run takes them from its checkpoint (profiling again would overwrite what training learned,
    and the losses after the resume would differ)."""
    cfg = dropout_config(tmp_path)
    cfg = replace(cfg, model=replace(cfg.model, norm="admin"))
    logged = []
    fit(cfg, tmp_path / "straight", RT, log=logged.append, progress=False)
    assert sum("Admin: residual weights profiled" in m for m in logged) == 1
    fit(cfg, tmp_path / "resumed", RT, log=lambda m: None, progress=False, stop_after_steps=3)
    logged.clear()
    fit(cfg, tmp_path / "resumed", RT, log=logged.append, progress=False)
    assert not any("Admin" in m for m in logged)
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    model = load_run(tmp_path / "straight")[1]
    top = model.decoder[-1].omega  # (3, D): profiled above 1, then trained per dimension
    assert top.min() > 1.2 and top.std(dim=1).max() > 0


def test_resume_drops_log_records_written_after_the_checkpoint(tmp_path, straight):
    """A run killed between checkpoints logged steps it will repeat: the log must not hold them twice."""
    cfg = dropout_config(tmp_path)
    fit(cfg, tmp_path / "resumed", RT, log=lambda m: None, progress=False, stop_after_steps=3)
    with (tmp_path / "resumed" / "metrics.jsonl").open("a") as f:  # what the killed process wrote after step 3
        f.write(json.dumps({"step": 4, "loss": 99.0}) + "\n" + json.dumps({"final": {"x": 1}}) + "\n")
    fit(cfg, tmp_path / "resumed", RT, log=lambda m: None, progress=False)
    assert losses(tmp_path / "resumed") == losses(straight)


def test_optimizer_state_is_matched_to_parameters_by_name():
    """A checkpoint whose parameter order differs from the current module order (code moved a
    submodule) still gives every parameter its own Adam moments; a misfit is a clear error."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    saved = ckpt.optimizer_state(opt, model)
    order = [3, 2, 1, 0]  # the same state, written by a model that registered its parameters in reverse
    shuffled = {**saved, "state": {i: saved["state"][j] for i, j in enumerate(order)},
                "param_names": [saved["param_names"][j] for j in order],
                "param_groups": [{**saved["param_groups"][0], "params": [0, 1, 2, 3]}]}
    fresh = torch.optim.AdamW(model.parameters())
    ckpt.load_optimizer(fresh, model, shuffled)
    for p in model.parameters():
        assert torch.equal(fresh.state[p]["exp_avg"], opt.state[p]["exp_avg"])
    legacy = {k: v for k, v in shuffled.items() if k != "param_names"}  # no names: no guessing by position
    with pytest.raises(ValueError, match="no parameter names"):
        ckpt.load_optimizer(torch.optim.AdamW(model.parameters()), model, legacy)


def test_resume_refuses_a_different_config(tmp_path):
    cfg = copy_config(tmp_path, max_steps=4)
    fit(cfg, tmp_path / "run", RT, log=lambda m: None, progress=False, stop_after_steps=2)
    other = replace(cfg, train=replace(cfg.train, lr=1e-4))
    with pytest.raises(ValueError, match="train.lr"):
        fit(other, tmp_path / "run", RT, log=lambda m: None, progress=False)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    cfg = copy_config(tmp_path, max_steps=2)
    fit(cfg, tmp_path / "run", RT, log=lambda m: None, progress=False)
    (tmp_path / "run" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read weights"):
        load_run(tmp_path / "run")


@pytest.mark.slow
def test_copy_task_is_learned_in_500_steps(tmp_path):
    cfg = copy_config(tmp_path, max_steps=500, max_tokens=1024, lr=4e-3, warmup_steps=50, log_every=50)
    fit(cfg, tmp_path / "run", RT, log=lambda m: None, progress=False)
    _, model = load_run(tmp_path / "run")
    vocab = Vocab(tmp_path / "run" / "vocab.model")
    test = load_corpus("synthetic:copy").test
    hyps = translate_ids(model, vocab.encode([p.src for p in test]), RT)
    exact = sum(vocab.decode(h) == p.tgt for h, p in zip(hyps, test)) / len(test)
    assert exact >= 0.95, exact


def test_sigterm_mid_step_saves_the_state_after_that_step_and_resume_repeats_the_straight_losses(tmp_path, straight,
                                                                                                monkeypatch):
    """A scheduler's SIGTERM (or Ctrl-C) during a step: the step completes, the checkpoint holds
    exactly its result, and the resumed run's losses equal an uninterrupted run's."""
    import os
    import signal

    import encdec.train as train_mod
    from encdec.train import Interrupted

    cfg = dropout_config(tmp_path)
    real_step, calls = train_mod.train_step, []

    def step_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of step 3
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", step_then_signal)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match="interrupted at step 3"):
        fit(cfg, tmp_path / "resumed", RT, log=lambda m: None, progress=False)
    monkeypatch.setattr(train_mod, "train_step", real_step)
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is gone again
    fit(cfg, tmp_path / "resumed", RT, log=lambda m: None, progress=False)
    assert losses(tmp_path / "resumed") == losses(straight)


def test_average_of_the_last_snapshots_is_their_mean(tmp_path):
    cfg = copy_config(tmp_path, max_steps=6, eval_every=2, average_last=2)
    fit(cfg, tmp_path / "run", RT, log=lambda m: None, progress=False)
    snaps = sorted((tmp_path / "run" / "snapshots").glob("*.safetensors"))
    assert [p.name for p in snaps] == ["step-0000004.safetensors", "step-0000006.safetensors"]  # rotation keeps 2
    avg = ckpt.average_snapshots(tmp_path / "run", [p.name for p in snaps], cfg.model, torch.device("cpu"))
    from safetensors.torch import load_file

    a, b = (load_file(str(p)) for p in snaps)
    for name, value in avg.state_dict().items():
        torch.testing.assert_close(value, (a[name].double() + b[name].double()).div(2).float(), rtol=0, atol=0)
    assert not torch.equal(a["encoder.0.ffn.w1.weight"], b["encoder.0.ffn.w1.weight"])  # a real average


def test_wall_clock_budget_counts_training_time_only(tmp_path, monkeypatch):
    """max_minutes against a fake clock: each step takes 6 s and each evaluation 10 min, so a
    1-minute budget is exactly 10 steps, however long the evaluations take."""
    import encdec.train as train_mod

    clock = [1000.0]
    monkeypatch.setattr(train_mod, "now", lambda: clock[0])
    real_step, real_eval = train_mod.train_step, train_mod.evaluate

    def slow_step(*args, **kwargs):
        clock[0] += 6.0
        return real_step(*args, **kwargs)

    def slow_eval(*args, **kwargs):
        clock[0] += 600.0
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", slow_step)
    monkeypatch.setattr(train_mod, "evaluate", slow_eval)
    cfg = copy_config(tmp_path, max_steps=0, max_minutes=1.0, eval_every=3)
    summary = fit(cfg, tmp_path / "run", RT, log=lambda m: None, progress=False)
    assert summary["step"] == 10
    assert summary["train_min"] == 1.0 and summary["total_min"] > 40  # 4 evaluations + the final one


def test_without_a_bleu_subset_the_log_reports_the_dev_loss(tmp_path):
    messages = []
    fit(copy_config(tmp_path, max_steps=4, eval_every=2), tmp_path / "run", RT, log=messages.append, progress=False)
    evals = [m for m in messages if m.startswith("step ")]
    assert len(evals) == 2 and all("dev loss" in m and "nan" not in m and "BLEU" not in m for m in evals)
    best = float(evals[-1].split("(best ")[1].split()[0])
    assert best > 0  # a loss, not minus a loss


def test_attention_dropout_trains_and_is_off_at_evaluation(tmp_path):
    cfg = copy_config(tmp_path, max_steps=3)
    cfg = replace(cfg, model=replace(cfg.model, attn_dropout=0.3))
    fit(cfg, tmp_path / "run", RT, log=lambda m: None, progress=False)
    assert all(math.isfinite(x) for x in losses(tmp_path / "run"))
    _, model = load_run(tmp_path / "run")

    batch = random_batch(vocab=64)
    model.eval()
    first, second = (model(batch.src, batch.src_mask, batch.tgt_in).logits for _ in range(2))
    assert torch.equal(first, second)  # no dropout at evaluation
    model.train()
    torch.manual_seed(0)
    noisy = model(batch.src, batch.src_mask, batch.tgt_in).logits
    assert not torch.equal(noisy, first)  # but there is in training


def test_bpe_vocabulary_trains_and_round_trips(tmp_path):
    cfg = copy_config(tmp_path, cache=tmp_path / "cache", max_steps=2)
    cfg = replace(cfg, data=replace(cfg.data, spm_model="bpe"))
    fit(cfg, tmp_path / "run", RT, log=lambda m: None, progress=False)
    vocab = Vocab(tmp_path / "run" / "vocab.model")
    text = load_corpus("synthetic:copy").test[0].src
    assert vocab.decode(vocab.encode([text])[0]) == text
    assert [p.name for p in (tmp_path / "cache").rglob("spm-*.model")] == ["spm-bpe-64.model"]
    # a BPE model scores its pieces by merge order (0, -1, -2, ...); a unigram model by log-probability
    scores = [vocab.sp.get_score(i) for i in range(4, vocab.size)]
    assert all(s == int(s) for s in scores) and scores == sorted(scores, reverse=True)


def scripted_dev_loss(monkeypatch, values: list[float]) -> None:
    """Make `train.evaluate` report these dev NLLs, one per call, in order (then the last again)."""
    import encdec.train as train_mod

    calls = []

    def fake(model, data, rt):
        calls.append(1)
        nll = values[min(len(calls), len(values)) - 1]
        return {"dev_nll": nll, "dev_ppl": math.exp(nll)}

    monkeypatch.setattr(train_mod, "evaluate", fake)


def test_patience_stops_training_and_resume_mid_patience_stops_at_the_same_step(tmp_path, monkeypatch):
    """Evaluations every 2 steps score 5, 4, 4.5, 4.2: with patience 2 the run stops at step 8,
    two evaluations after its best (step 4), far below its 200-step cap; a run stopped at step
    6, mid-patience, resumes and stops at the same step with the same losses."""
    cfg = copy_config(tmp_path, max_steps=200, eval_every=2, patience=2, schedule="inverse_sqrt")
    dev = [5.0, 4.0, 4.5, 4.2, 3.0, 3.0]
    scripted_dev_loss(monkeypatch, dev)
    summary = fit(cfg, tmp_path / "straight", RT, log=lambda m: None, progress=False)
    assert summary["step"] == 8 and summary["best_step"] == 4
    assert summary["stop"] == "converged: no better dev score in 2 evaluations after step 4"
    scripted_dev_loss(monkeypatch, dev)
    assert fit(cfg, tmp_path / "resumed", RT, log=lambda m: None, progress=False, stop_after_steps=6) == \
        {"stopped_at": 6}
    resumed = fit(cfg, tmp_path / "resumed", RT, log=lambda m: None, progress=False)
    assert resumed["step"] == 8 and resumed["stop"] == summary["stop"]
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    final = read_metrics(tmp_path / "resumed")[-1]
    assert final["final"]["stop"].startswith("converged")


def lrs(run) -> dict[int, float]:
    return {r["step"]: r["lr"] for r in read_metrics(run) if "lr" in r}


def test_plateau_schedule_lowers_the_lr_when_the_dev_score_stalls_and_resumes_with_it(tmp_path, monkeypatch):
    """Evaluations every 2 steps; with decay_patience 2 the LR halves at step 8 (two evaluations
    after the best at 4), again at 16 (two after the new best at 12) and at 20 (two after that
    decay), where patience 4 stops the run; a run stopped at step 10 resumes with the decay."""
    cfg = copy_config(tmp_path, max_steps=200, eval_every=2, patience=4, schedule="plateau", decay_patience=2)
    dev = [5.0, 4.0, 4.5, 4.2, 4.1, 3.0, 3.5, 3.6, 3.7, 3.8]
    scripted_dev_loss(monkeypatch, dev)
    summary = fit(cfg, tmp_path / "straight", RT, log=lambda m: None, progress=False)
    assert summary["step"] == 20 and summary["stop"] == "converged: no better dev score in 4 evaluations after step 12"
    lr = lrs(tmp_path / "straight")
    peak = cfg.train.lr
    assert [lr[s] / peak for s in (5, 8, 12, 16, 17, 20)] == pytest.approx([0.5, 0.8, 0.5, 0.5, 0.25, 0.25])
    scales = [r["lr_scale"] for r in read_metrics(tmp_path / "straight") if "dev_nll" in r]
    assert scales == [1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.125]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)  # the same rule in torch's words
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=1, threshold=0)
    torch_scales = []
    for nll in dev:
        sched.step(-nll)
        torch_scales.append(opt.param_groups[0]["lr"])
    assert scales == torch_scales
    scripted_dev_loss(monkeypatch, dev)
    assert fit(cfg, tmp_path / "resumed", RT, log=lambda m: None, progress=False, stop_after_steps=10) == \
        {"stopped_at": 10}
    resumed = fit(cfg, tmp_path / "resumed", RT, log=lambda m: None, progress=False)
    assert resumed["stop"] == summary["stop"]
    assert lrs(tmp_path / "resumed") == lr and losses(tmp_path / "resumed") == losses(tmp_path / "straight")


def test_until_converged_sets_the_patience_schedule_and_cap(tmp_path):
    from typer.testing import CliRunner

    from encdec.cli import app

    out = tmp_path / "run"
    args = ["train", "--data", "synthetic:copy", "--preset", "tiny", "--until-converged", "--steps", "4", "--out",
            str(out), "--no-evaluate", "--set", f"data.cache_dir={CACHE}", "--set", "train.max_tokens=256"]
    r = CliRunner().invoke(app, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    tc = json.loads((out / "config.json").read_text())["train"]
    assert (tc["patience"], tc["schedule"], tc["max_steps"], tc["max_minutes"]) == (5, "inverse_sqrt", 4, 0.0)
    assert "stopped at step 4: budget" in r.output
    r = CliRunner().invoke(app, args[:-4] + ["--minutes", "5"], catch_exceptions=False)
    assert r.exit_code == 2 and "not --minutes" in r.output
    plateau = tmp_path / "plateau"  # a schedule that needs no run length is kept
    r = CliRunner().invoke(app, [*args[:9], str(plateau), *args[10:], "--set", "train.schedule=plateau"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads((plateau / "config.json").read_text())["train"]["schedule"] == "plateau"
    assert "LR schedule plateau (x 0.5 after 2 evaluations" in r.output


def test_milestones_are_steps_1000_times_a_power_of_two():
    assert [s for s in range(1, 20_000) if ckpt.is_milestone(s)] == [1000, 2000, 4000, 8000, 16000]


def test_milestone_weights_are_kept_while_snapshots_rotate(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "MILESTONE_BASE", 2)  # milestones at steps 2, 4, 8 instead of 1000, 2000, 4000
    fit(copy_config(tmp_path, max_steps=8, eval_every=2), tmp_path / "run", RT, log=lambda m: None, progress=False)
    assert sorted(p.name for p in (tmp_path / "run" / "milestones").iterdir()) == [
        "step-0000002.safetensors", "step-0000004.safetensors", "step-0000008.safetensors"]
    assert [p.name for p in (tmp_path / "run" / "snapshots").iterdir()] == ["step-0000008.safetensors"]
