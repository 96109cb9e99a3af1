"""Why does bf16 autocast train slower than fp32 on the GPU? One prepared check (issue: fast on every
CPU and on the GPU). For `small` and `transformer-base`, fp32 and bf16 training tok/s over STEPS
steps of encdec's own training step, on random tokens whose lengths vary like the Bible's (so
batches take many shapes, as in real training), then bf16 again with one candidate cause switched
off at a time:

  no-cudnn-sdp   torch.backends.cuda.enable_cudnn_sdp(False) (cuDNN attention plans per shape)
  pad8           lengths padded to a multiple of 8 (fewer distinct batch shapes)
  no-cast-cache  torch.autocast(cache_enabled=False) (autocast's cache of bf16 weight copies)

and a torch.profiler table of the top kernels of bf16's first steps. Prints a table, writes
gpu_check.json (and profile_*.txt) to --out.

usage: python benchmarks/gpu_check.py [--device cuda] [--steps 300] [--out DIR] [--presets small,transformer-base]
The CPU dry run (`--device cpu --steps 4 --presets tiny`) checks the script before a GPU is lent.
"""

from __future__ import annotations

import argparse
import contextlib
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

VARIANTS = ("fp32", "bf16", "bf16 no-cudnn-sdp", "bf16 pad8", "bf16 no-cast-cache")


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


def run(preset_name: str, variant: str, device: str, steps: int, out: Path, vocab: int = 8000) -> dict:
    torch.manual_seed(0)
    cfg = replace(preset(preset_name), vocab_size=vocab, dropout=0.0)
    model = Transformer(cfg).to(device)
    tc = TrainConfig(max_steps=steps, lr=1e-4)
    opt = make_optimizer(model, tc)
    precision = "fp32" if variant == "fp32" else "bf16"
    rt = Runtime.create(device, precision)
    if variant == "bf16 no-cast-cache":
        rt = NoCastCache(rt.device, rt.amp_dtype)
    sdp = torch.backends.cuda.enable_cudnn_sdp if device.startswith("cuda") else None
    if sdp is not None:
        sdp(variant != "bf16 no-cudnn-sdp")
    data = [b.to(rt.device) for b in batches(steps, vocab, 3000, pad8=variant == "bf16 pad8")]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times, tokens = [], []
    for i, batch in enumerate(data):
        profiling = variant == "bf16" and i == 3
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
            (out / f"profile_{preset_name}_bf16_step{i}.txt").write_text(table + "\n")
    if sdp is not None:
        sdp(True)
    half = len(times) // 2
    return {"preset": preset_name, "variant": variant, "steps": len(times),
            "tok_s_all": sum(tokens) / sum(times),
            "tok_s_first_half": sum(tokens[:half]) / max(sum(times[:half]), 1e-9),
            "tok_s_second_half": sum(tokens[half:]) / sum(times[half:]),
            "distinct_shapes": len({tuple(b.src.shape) + tuple(b.tgt_in.shape) for b in data})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--presets", default="small,transformer-base")
    ap.add_argument("--out", type=Path, default=Path("gpu-check"))
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device here; for the dry run use --device cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"device: {name}, torch {torch.__version__}, {args.steps} steps per row")
    rows = []
    for preset_name in args.presets.split(","):
        for variant in VARIANTS:
            r = run(preset_name, variant, args.device, args.steps, args.out)
            rows.append(r)
            print(f"{preset_name:18s} {variant:20s} tok/s {r['tok_s_all']:10.0f}  "
                  f"first half {r['tok_s_first_half']:10.0f}  second half {r['tok_s_second_half']:10.0f}  "
                  f"({r['distinct_shapes']} batch shapes)", flush=True)
    (args.out / "gpu_check.json").write_text(json.dumps({"device": name, "torch": torch.__version__,
                                                          "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}/gpu_check.json and the profiles")


if __name__ == "__main__":
    main()
