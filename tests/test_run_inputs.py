"""Whatever a user feeds a trained run, translate gives one line out for every line in, and a run
folder whose config does not fit its weights is one clear error in every command that loads it."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from encdec.cli import app
from encdec.evaluation import read_lines

runner = CliRunner()


def run(*args, **kw):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kw)


def test_read_lines_splits_on_newline_only_and_replaces_invalid_bytes():
    sep = "\u2028".encode()  # a Unicode line separator, which str.splitlines() would split at
    raw = b"a\r\nb\x00c\n\xff\xfeok\n" + sep + b"sep" + sep + b"\n\n"
    lines, bad = read_lines(raw)
    assert lines == ["a", "b\x00c", "\ufffd\ufffdok", "\u2028sep\u2028", ""]
    assert bad == [3]
    assert read_lines(b"") == ([], [])
    assert read_lines(b"no newline at the end") == (["no newline at the end"], [])
    assert read_lines(b"\xef\xbb\xbfbom\r\n") == (["bom"], [])


def test_a_too_long_line_is_truncated_with_a_warning_and_no_line_is_lost(trained_tiny):
    long_line = " ".join(["s5 s6 s7 s8"] * 2500)  # 20,000 characters, thousands of pieces
    text = f"s1 s2 s3\n{long_line}\n\ns4 s5\n"
    r = run("translate", "--checkpoint", trained_tiny, "--beam", 1, input=text)
    assert r.exit_code == 0, r.output
    out = r.stdout.split("\n")
    assert len(out) == 5 and out[-1] == ""  # 4 lines, each ended by "\n"
    assert out[0] and out[1] and out[2] == "" and out[3]
    assert "line 2:" in r.stderr and "more than the model takes" in r.stderr
    assert "line 1:" not in r.stderr and "line 4:" not in r.stderr


def test_invalid_utf8_is_replaced_with_a_warning_and_other_lines_are_unaffected(trained_tiny):
    clean = run("translate", "--checkpoint", trained_tiny, "--beam", 1, input=b"s1 s2 s3\ns4 s5\n")
    r = run("translate", "--checkpoint", trained_tiny, "--beam", 1, input=b"s1 s2 s3\ns9 \xff\xfe s7\ns4 s5\n")
    assert r.exit_code == 0, r.output
    out = r.stdout.split("\n")
    assert len(out) == 4 and "Traceback" not in r.output
    assert [out[0], out[2]] == clean.stdout.split("\n")[:2]
    assert "line 2: invalid UTF-8" in r.stderr


@pytest.fixture
def mismatched_run(trained_tiny, tmp_path):
    """A copy of a trained run whose config.json says d_ff 256 where the weights have 128."""
    run_dir = tmp_path / "mismatched"
    shutil.copytree(trained_tiny, run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["model"]["d_ff"] = 2 * cfg["model"]["d_ff"]
    (run_dir / "config.json").write_text(json.dumps(cfg))
    return run_dir


@pytest.mark.parametrize("command", [
    ["translate", "--checkpoint", "{run}"],
    ["evaluate", "--checkpoint", "{run}", "--limit", "2"],
    ["export", "hf", "--checkpoint", "{run}", "--out", "{tmp}/hf"],
    ["analyze", "attention", "--checkpoint", "{run}", "--out", "{tmp}/att", "--text", "s1 s2"],
    ["train", "--out", "{run}", "--config", "{run}/config.json", "--no-evaluate"],
])
def test_a_config_that_does_not_fit_the_weights_is_one_clear_error(mismatched_run, tmp_path, command):
    args = [a.format(run=mismatched_run, tmp=tmp_path) for a in command]
    r = run(*args, input="s1 s2\n")
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    error = [line for line in r.output.splitlines() if "error:" in line]
    assert len(error) == 1, r.output
    assert "ffn" in error[0] and "[128, 64]" in error[0] and "[256, 64]" in error[0], error[0]
