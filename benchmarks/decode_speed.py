"""Decoding speed: encdec greedy and beam 4 against Hugging Face `generate` and CTranslate2, equal work.

One trained run (default: `runs/ablate-dropout0-lr2e-3`, a paper-wiring 30-minute run) is
exported to MarianMT and to CTranslate2 (`encdec export`), so all decoders hold the same
weights. Work: `--sentences` test sentences cut to their first `--src-len` pieces (those at
least that long), batches of `--batch`, every output forced to exactly `--out-len` tokens
(end-of-sentence forbidden before, forced after). Reported: sentences/s and output tokens/s
(median of `--repeats` rounds) and peak RSS.

Every timed pass runs in a fresh process (load, one warm-up pass, one timed pass), and the
decoders take turns round by round. Sharing one process skews the comparison: after
CTranslate2 had decoded in the same process, encdec's greedy decoding ran at 57.5 sentences/s
against 79.7 in a process of its own (2026-11-27; the libraries bring their own MKL and OpenMP
runtimes). `encdec-int8` is encdec with `encdec.quantize.quantize_int8`. Peers are optional.
`encdec-bf16` (not in the default list) decodes under bf16 autocast, as `--precision bf16`
does (`auto` decodes in fp32: `encdec.runtime`). `encdec-compiled` (not in the default list) is
encdec with its decoding step under
`torch.compile(dynamic=True)` and inductor's weight freezing, instead of the packed weights of
`fast_inference` (whose MKL op torch.compile cannot trace); its compile time falls in the
warm-up pass and is printed as `warm_sec`.

    .venv/bin/python benchmarks/decode_speed.py [--checkpoint runs/ablate-dropout0-lr2e-3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine
import torch
from memory import peak_rss_mib, reset_peak_rss

DECODERS = ("encdec", "encdec-int8", "hf", "ct2-float32", "ct2-int8")  # the default list
OPTIONAL = ("encdec-compiled", "encdec-bf16")


def sources(run: Path, n: int, src_len: int) -> list[list[int]]:
    from encdec.checkpoint import load_run
    from encdec.data import load_corpus
    from encdec.data.vocab import Vocab

    cfg, _ = load_run(run)
    vocab = Vocab(run / "vocab.model")
    pairs = load_corpus(cfg.data.source, cfg.data.cache_dir).split("test")
    ids = [s[:src_len] for s in vocab.encode([p.src for p in pairs]) if len(s) >= src_len]
    if len(ids) < n:
        raise SystemExit(f"only {len(ids)} test sentences have {src_len} pieces; lower --src-len or --sentences")
    return ids[:n]


def make_decoder(name: str, run: Path, export_dir: Path, beam: int, out_len: int, batch: int):
    """A function that decodes a list of source id lists (each ending without EOS)."""
    from encdec.data.batching import encode_sources

    if name in ("encdec", "encdec-int8", "encdec-compiled", "encdec-bf16"):
        from encdec.checkpoint import load_run
        from encdec.decode import beam_search, greedy
        from encdec.quantize import quantize_int8

        _, model = load_run(run)
        model = quantize_int8(model) if name == "encdec-int8" else model.eval()
        fast = model.fast_inference
        if name == "encdec-compiled":
            from torch._inductor import config as inductor

            inductor.freezing = True  # weights as constants, prepacked for the CPU
            model.decode_step = torch.compile(model.decode_step, dynamic=True)
            fast = model.fast_inference = contextlib.nullcontext  # plain nn.Linear products, traceable

        bf16 = name == "encdec-bf16"

        def run_encdec(srcs):
            amp = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with fast(), amp:  # once for all batches, as `translate_ids` does
                for i in range(0, len(srcs), batch):
                    src, mask = encode_sources(srcs[i : i + batch])
                    if beam == 1:
                        greedy(model, src, mask, min_len=out_len, max_len=out_len)
                    else:
                        beam_search(model, src, mask, beam=beam, min_len=out_len, max_len=out_len)

        return run_encdec
    if name == "hf":
        from transformers import MarianMTModel

        model = MarianMTModel.from_pretrained(export_dir / "hf", local_files_only=True).eval()

        def run_hf(srcs):
            for i in range(0, len(srcs), batch):
                src, mask = encode_sources(srcs[i : i + batch])
                with torch.inference_mode():
                    model.generate(input_ids=src, attention_mask=mask.long(), num_beams=beam, do_sample=False,
                                   min_new_tokens=out_len, max_new_tokens=out_len, early_stopping=False)

        return run_hf
    if name.startswith("ct2"):
        import ctranslate2

        from encdec.data.vocab import Vocab

        vocab = Vocab(run / "vocab.model")
        translator = ctranslate2.Translator(str(export_dir / name), device="cpu", inter_threads=1,
                                            intra_threads=torch.get_num_threads())

        def run_ct2(srcs):
            tokens = [vocab.pieces(s) + ["</s>"] for s in srcs]
            translator.translate_batch(tokens, max_batch_size=batch, beam_size=beam, min_decoding_length=out_len,
                                       max_decoding_length=out_len)

        return run_ct2
    raise ValueError(name)


def export_all(run: Path, out: Path) -> None:
    from encdec.export import export_ct2, export_hf

    export_hf(run, out / "hf")
    for q in ("float32", "int8"):
        try:
            export_ct2(run, out / f"ct2-{q}", quantization=q)
        except ValueError as e:
            print(f"no CTranslate2 export: {e}", file=sys.stderr)


def worker(args: argparse.Namespace, srcs: list[list[int]]) -> None:
    """One decoder in this (fresh) process: a warm-up pass, one timed pass; prints seconds and peak RSS."""
    name, beam, export_dir = args.worker
    fn = make_decoder(name, args.checkpoint, Path(export_dir), int(beam), args.out_len, args.batch)
    t0 = time.perf_counter()
    fn(srcs)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    fn(srcs)
    print(json.dumps({"sec": time.perf_counter() - t0, "warm_sec": warm, "rss": peak_rss_mib()}))


def timed_pass(args: argparse.Namespace, name: str, beam: int, export_dir: Path) -> dict | None:
    p = subprocess.run([sys.executable, __file__, "--checkpoint", str(args.checkpoint), "--sentences",
                        str(args.sentences), "--src-len", str(args.src_len), "--out-len", str(args.out_len),
                        "--batch", str(args.batch), "--worker", name, str(beam), str(export_dir)],
                       capture_output=True, text=True)
    if p.returncode:
        print(f"{name} beam {beam} failed: {p.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=Path("runs/ablate-dropout0-lr2e-3"))
    ap.add_argument("--sentences", type=int, default=200)
    ap.add_argument("--src-len", type=int, default=30)
    ap.add_argument("--out-len", type=int, default=40)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--beams", default="1,4")
    ap.add_argument("--decoders", default=",".join(DECODERS))
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)  # NAME BEAM EXPORT_DIR
    args = ap.parse_args()
    if args.worker:
        reset_peak_rss()
        worker(args, sources(args.checkpoint, args.sentences, args.src_len))
        return
    sources(args.checkpoint, args.sentences, args.src_len)  # fail early on too few sentences
    names = [n for n in args.decoders.split(",") if n]
    unknown = sorted(set(names) - set(DECODERS + OPTIONAL))
    if unknown:
        ap.error(f"unknown decoders {unknown}; choose from {', '.join(DECODERS + OPTIONAL)}")
    beams = [int(b) for b in args.beams.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = Path(tmp)
        if any(not n.startswith("encdec") for n in names):  # the peers read exported weights
            export_all(args.checkpoint, export_dir)
        for b in beams:
            runs: dict[str, list[dict]] = {n: [] for n in names}
            for _ in range(args.repeats):  # interleaved rounds, one fresh process per decoder and round
                for n in names:
                    r = timed_pass(args, n, b, export_dir)
                    if r is not None:
                        runs[n].append(r)
            for n, rs in runs.items():
                if rs:
                    sec = statistics.median(r["sec"] for r in rs)
                    rows.append({"decoder": n, "beam": b, "sent_s": args.sentences / sec,
                                 "tok_s": args.sentences * args.out_len / sec,
                                 "peak_rss_mib": max(r["rss"] for r in rs),
                                 "warm_sec": statistics.median(r["warm_sec"] for r in rs)})
    print(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "threads": torch.get_num_threads()}))
    print(machine.describe())
    print(f"decoding {args.sentences} sentences of {args.src_len} source pieces, outputs forced to {args.out_len} "
          f"tokens, batch {args.batch}, {torch.get_num_threads()} threads, median of {args.repeats} rounds "
          "(each decoder in a fresh process per round: warm-up pass, then the timed pass)")
    print("| decoder | beam | sentences/s | tokens/s | vs ct2-float32 | peak RSS | warm-up pass |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ref = next((x["sent_s"] for x in rows if x["decoder"] == "ct2-float32" and x["beam"] == r["beam"]), None)
        ratio = f"{r['sent_s'] / ref:.2f}x" if ref else ""
        print(f"| {r['decoder']} | {r['beam']} | {r['sent_s']:.1f} | {r['tok_s']:,.0f} | {ratio} | "
              f"{r['peak_rss_mib']:,.0f} MiB | {r['warm_sec']:.1f} s |")


if __name__ == "__main__":
    main()
