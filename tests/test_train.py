import json
from dataclasses import replace

import pytest
import torch

from encdec import checkpoint as ckpt
from encdec.checkpoint import load_run
from encdec.config import DataConfig, RunConfig, TrainConfig, preset
from encdec.data import load_corpus
from encdec.data.vocab import Vocab
from encdec.decode import translate_ids
from encdec.runtime import Runtime
from encdec.train import fit

RT = Runtime.create("cpu", "fp32")


def copy_config(tmp_path, **train) -> RunConfig:
    base = dict(max_steps=20, max_tokens=512, lr=3e-3, warmup_steps=10, schedule="linear", eval_every=1000,
                dev_bleu_sentences=0, log_every=1)
    base.update(train)
    return RunConfig(model=preset("tiny"), data=DataConfig(source="synthetic:copy", vocab_size=64,
                                                           cache_dir=str(tmp_path / "cache")),
                     train=TrainConfig(**base))


def losses(run) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_twenty_steps_lower_the_loss(tmp_path):
    fit(copy_config(tmp_path), tmp_path / "run", RT, log=lambda m: None, progress=False)
    ls = losses(tmp_path / "run")
    assert len(ls) == 20 and sum(ls[-5:]) / 5 < 0.8 * sum(ls[:5]) / 5


def test_resume_reproduces_the_uninterrupted_losses(tmp_path):
    cfg = copy_config(tmp_path, max_steps=8)
    cfg = replace(cfg, model=replace(cfg.model, dropout=0.1))  # dropout: the RNG state must be restored too
    fit(cfg, tmp_path / "straight", RT, log=lambda m: None, progress=False)
    first = fit(cfg, tmp_path / "resumed", RT, log=lambda m: None, progress=False, stop_after_steps=3)
    assert first == {"stopped_at": 3}
    fit(cfg, tmp_path / "resumed", RT, log=lambda m: None, progress=False)
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    a, b = load_run(tmp_path / "straight")[1], load_run(tmp_path / "resumed")[1]
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_resume_drops_log_records_written_after_the_checkpoint(tmp_path):
    """A run killed between checkpoints logged steps it will repeat: the log must not hold them twice."""
    cfg = copy_config(tmp_path, max_steps=8)
    fit(cfg, tmp_path / "straight", RT, log=lambda m: None, progress=False)
    fit(cfg, tmp_path / "resumed", RT, log=lambda m: None, progress=False, stop_after_steps=3)
    with (tmp_path / "resumed" / "metrics.jsonl").open("a") as f:  # what the killed process wrote after step 3
        f.write(json.dumps({"step": 4, "loss": 99.0}) + "\n" + json.dumps({"final": {"x": 1}}) + "\n")
    fit(cfg, tmp_path / "resumed", RT, log=lambda m: None, progress=False)
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")


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
    legacy = {k: v for k, v in shuffled.items() if k != "param_names"}  # old checkpoints: by position
    with pytest.raises(ValueError, match="does not fit parameter"):
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


def test_copy_task_is_learned_in_500_steps(tmp_path):
    cfg = copy_config(tmp_path, max_steps=500, max_tokens=1024, lr=4e-3, warmup_steps=50, log_every=50)
    fit(cfg, tmp_path / "run", RT, log=lambda m: None, progress=False)
    _, model = load_run(tmp_path / "run")
    vocab = Vocab(tmp_path / "run" / "vocab.model")
    test = load_corpus("synthetic:copy").test
    hyps = translate_ids(model, vocab.encode([p.src for p in test]), RT)
    exact = sum(vocab.decode(h) == p.tgt for h, p in zip(hyps, test)) / len(test)
    assert exact >= 0.95, exact


def test_sigterm_mid_step_saves_the_state_after_that_step_and_resume_repeats_the_straight_losses(tmp_path,
                                                                                                monkeypatch):
    """A scheduler's SIGTERM (or Ctrl-C) during a step: the step completes, the checkpoint holds
    exactly its result, and the resumed run's losses equal an uninterrupted run's."""
    import os
    import signal

    import encdec.train as train_mod
    from encdec.train import Interrupted

    cfg = copy_config(tmp_path, max_steps=8)
    cfg = replace(cfg, model=replace(cfg.model, dropout=0.1))
    fit(cfg, tmp_path / "straight", RT, log=lambda m: None, progress=False)
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
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
