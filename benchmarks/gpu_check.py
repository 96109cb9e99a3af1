"""Why did bf16 autocast train slower than fp32 on the GPU? One prepared check (issue: fast on every
CPU and on the GPU). For `small` and `transformer-base`, fp32 and bf16 training tok/s over STEPS
steps of encdec's own training step (its Runtime, so TF32 products in fp32), on random tokens whose
lengths vary like the Bible's (so batches take many shapes, as in real training), at one or more
batch sizes; and bf16 with torch's default cuDNN attention switched back on (encdec's Runtime
switches it off on GPUs since this check found it to be the cause), alone and with each other
candidate cause removed:

  cudnn-sdp      torch.backends.cuda.enable_cudnn_sdp(True) (cuDNN attention plans per shape)
  pad8           lengths padded to a multiple of 8 (fewer distinct batch shapes)
  no-cast-cache  torch.autocast(cache_enabled=False) (autocast's cache of bf16 weight copies)

A torch.profiler table of the top kernels of an early step of fp32 and of bf16; and, for every
row, tok/s over the steps whose batch shape is new against those whose shape came before (a cost
paid once per shape shows as the gap between the two). A row stops after STEPS steps or
ROW_SECONDS seconds, whichever comes first, so the whole check fits one device session. Prints a
table, writes gpu_check.json (and profile_*.txt) to --out.

usage: python benchmarks/gpu_check.py [--device cuda] [--steps 300] [--row-seconds 20] [--out DIR]
           [--presets small,transformer-base] [--tokens 3000,12000] [--variants fp32,bf16]
The CPU dry run (`--device cpu --steps 4 --presets tiny`) checks the script before a GPU is lent.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import platform
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from encdec.config import TrainConfig, preset
from encdec.data.batching import collate
from encdec.model import Transformer
from encdec.optim import make_optimizer, train_step
from encdec.runtime import Runtime

VARIANTS = ("fp32", "bf16", "bf16 pad8", "bf16 cudnn-sdp", "bf16 cudnn-sdp pad8", "bf16 cudnn-sdp no-cast-cache")


@dataclass(frozen=True)
class NoCastCache(Runtime):
    """bf16 autocast without the cache of bf16 weight copies."""

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, cache_enabled=False)


def batches(n: int, vocab: int, max_tokens: int, pad8: bool, seed: int = 0):
    """n batches of random tokens, about max_tokens target tokens each, lengths 5..80 like verses."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(5, 80)
        if pad8:
            length = -(-length // 8) * 8 - 1  # + EOS/BOS = a multiple of 8
        rows = max(1, max_tokens // (length + 1))
        pairs = [([rng.randrange(4, vocab) for _ in range(length)], [rng.randrange(4, vocab) for _ in range(length)])
                 for _ in range(rows)]
        out.append(collate(pairs))
    return out


def run(preset_name: str, variant: str, device: str, steps: int, row_seconds: float, max_tokens: int,
        out: Path, vocab: int = 8000) -> dict:
    torch.manual_seed(0)
    cfg = replace(preset(preset_name), vocab_size=vocab, dropout=0.0)
    model = Transformer(cfg).to(device)
    tc = TrainConfig(max_steps=steps, lr=1e-4)
    opt = make_optimizer(model, tc)
    precision = "fp32" if variant == "fp32" else "bf16"
    rt = Runtime.create(device, precision)
    if "no-cast-cache" in variant:
        rt = NoCastCache(rt.device, rt.amp_dtype)
    sdp = torch.backends.cuda.enable_cudnn_sdp if device.startswith("cuda") else None
    if sdp is not None and "cudnn-sdp" in variant:
        sdp(True)  # torch's default, which encdec's Runtime switches off on GPUs
    data = [b.to(rt.device) for b in batches(steps, vocab, max_tokens, pad8="pad8" in variant)]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times, tokens, new_shape, seen = [], [], [], set()
    start = time.perf_counter()
    for i, batch in enumerate(data):
        if time.perf_counter() - start > row_seconds:
            break
        shape = tuple(batch.src.shape) + tuple(batch.tgt_in.shape)
        new_shape.append(shape not in seen)
        seen.add(shape)
        profiling = variant in ("fp32", "bf16") and i == 3
        ctx = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if sdp else [])) \
            if profiling else contextlib.nullcontext()
        sync()
        t0 = time.perf_counter()
        with ctx as prof:
            stats = train_step(model, [batch], opt, tc.lr, tc, rt)
            sync()
        times.append(time.perf_counter() - t0)
        tokens.append(stats["tokens"])
        if profiling:
            key = "self_cuda_time_total" if sdp else "self_cpu_time_total"
            table = prof.key_averages().table(sort_by=key, row_limit=15)
            (out / f"profile_{preset_name}_{max_tokens}_{variant}_step{i}.txt").write_text(table + "\n")
    half = len(times) // 2

    def tok_s(pick) -> float | None:
        chosen = [(n, t) for n, t, p in zip(tokens, times, pick) if p]
        return sum(n for n, _ in chosen) / sum(t for _, t in chosen) if chosen else None

    return {"preset": preset_name, "variant": variant, "max_tokens": max_tokens, "steps": len(times),
            "tok_s_all": sum(tokens) / sum(times),
            "tok_s_first_half": tok_s([i < half for i in range(len(times))]),
            "tok_s_second_half": tok_s([i >= half for i in range(len(times))]),
            "tok_s_new_shape": tok_s(new_shape), "tok_s_seen_shape": tok_s([not n for n in new_shape]),
            "new_shapes": sum(new_shape), "step_seconds": [round(t, 5) for t in times]}


def fmt(x: float | None) -> str:
    return f"{x:9.0f}" if x is not None else "        -"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--row-seconds", type=float, default=20.0, help="stop a row after this long")
    ap.add_argument("--presets", default="small,transformer-base")
    ap.add_argument("--tokens", default="3000", help="comma-separated batch sizes in target tokens")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from: {', '.join(VARIANTS)}")
    ap.add_argument("--out", type=Path, default=Path("gpu-check"))
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device here; for the dry run use --device cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"device: {name}, torch {torch.__version__}, up to {args.steps} steps or {args.row_seconds:g} s per row")
    rows = []
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        raise SystemExit(f"error: unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    for preset_name, max_tokens, variant in itertools.product(args.presets.split(","),
                                                              map(int, args.tokens.split(",")), variants):
        r = run(preset_name, variant, args.device, args.steps, args.row_seconds, max_tokens, args.out)
        rows.append(r)
        cells = "  ".join(f"{k} {fmt(r['tok_s_' + k])}" for k in ("all", "first_half", "second_half",
                                                                    "new_shape", "seen_shape"))
        print(f"{preset_name:16s} {max_tokens:6d} tok {variant:28s} {r['steps']:4d} steps "
              f"({r['new_shapes']} shapes)  tok/s {cells}", flush=True)
    (args.out / "gpu_check.json").write_text(json.dumps({"device": name, "torch": torch.__version__,
                                                          "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}/gpu_check.json and the profiles")


if __name__ == "__main__":
    main()
