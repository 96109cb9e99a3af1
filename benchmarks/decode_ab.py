"""encdec's decoding speed before and after a change: this tree against another source tree.

Each pass runs in a fresh process, the two trees taking turns for `--rounds` rounds; reported
is the median sentences/s per tree and search. `forced`: the work of `decode_speed.py` (test
sentences cut to 30 pieces, outputs forced to 40 tokens, batches of 32). `real`:
`translate_ids` on the first `--sentences` test sentences, unforced, as evaluation decodes; the
outputs of the two trees are compared sentence by sentence.

    git worktree add /tmp/base a5bda89
    .venv/bin/python benchmarks/decode_ab.py --base /tmp/base/src
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def real_pass(checkpoint: Path, n: int, beam: int, out: Path) -> None:
    """In this process: translate the first n test sentences twice (warm-up, timed); write the timing and outputs."""
    from encdec.checkpoint import load_run
    from encdec.data import load_corpus
    from encdec.data.vocab import Vocab
    from encdec.decode import translate_ids
    from encdec.runtime import Runtime

    cfg, model = load_run(checkpoint)
    vocab = Vocab(checkpoint / "vocab.model")
    srcs = vocab.encode([p.src for p in load_corpus(cfg.data.source, cfg.data.cache_dir).split("test")])[:n]
    rt = Runtime.create("cpu", "fp32")
    translate_ids(model, srcs[:50], rt, beam=beam)
    t0 = time.perf_counter()
    hyps = translate_ids(model, srcs, rt, beam=beam)
    out.write_text(json.dumps({"sent_s": n / (time.perf_counter() - t0), "hyps": hyps}))


def one_pass(args: argparse.Namespace, tree: str | None, mode: str, beam: int, out: Path) -> dict:
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = tree
    if mode == "real":
        cmd = [sys.executable, __file__, "--child", str(beam), str(out), "--checkpoint", str(args.checkpoint),
               "--sentences", str(args.sentences)]
    else:
        cmd = [sys.executable, str(HERE / "decode_speed.py"), "--checkpoint", str(args.checkpoint),
               "--worker", "encdec", str(beam), tempfile.gettempdir()]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        raise SystemExit(f"{cmd} failed:\n{p.stderr[-2000:]}")
    if mode == "real":
        return json.loads(out.read_text())
    return {"sent_s": 200 / json.loads(p.stdout.strip().splitlines()[-1])["sec"], "hyps": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=False, help="the other tree's src/ folder (put first on PYTHONPATH)")
    ap.add_argument("--checkpoint", type=Path, default=Path("runs/ablate-dropout0-lr2e-3"))
    ap.add_argument("--sentences", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--beams", default="1,4")
    ap.add_argument("--modes", default="forced,real")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # BEAM OUT
    args = ap.parse_args()
    if args.child:
        real_pass(args.checkpoint, args.sentences, int(args.child[0]), Path(args.child[1]))
        return
    if not args.base:
        ap.error("--base is required")
    print("| mode | beam | base sent/s | this tree sent/s | speed-up | identical outputs |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            for beam in (int(b) for b in args.beams.split(",")):
                runs: dict[str, list[dict]] = {"base": [], "this": []}
                for _ in range(args.rounds):
                    for name, tree in (("base", args.base), ("this", None)):
                        runs[name].append(one_pass(args, tree, mode, beam, Path(tmp) / f"{name}.json"))
                base, this = (statistics.median(r["sent_s"] for r in runs[k]) for k in ("base", "this"))
                same = ""
                if mode == "real":
                    a, b = runs["base"][0]["hyps"], runs["this"][0]["hyps"]
                    same = f"{sum(x == y for x, y in zip(a, b))} of {len(a)}"
                print(f"| {mode} | {beam} | {base:.1f} | {this:.1f} | {this / base:.2f}× | {same} |")


if __name__ == "__main__":
    main()
