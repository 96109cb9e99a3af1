"""Training speed: encdec against torch.nn.Transformer and Hugging Face MarianMTModel, same work.

Same config for all (d_model 256, 3+3 layers, 4 heads, d_ff 1024, shared vocabulary 8000,
post-LN, dropout 0.1, AdamW, label smoothing 0.1), the same batches (128 rows, source and
target lengths 20-32, padded; real target tokens counted), interleaved rounds (one step of
each model per round, so drifts of a shared machine hit all alike), median tokens/s over the
rounds after warm-up. Peak RSS is measured per model in a fresh subprocess (`--rss MODEL`).
The header names the CPU, its AVX-512/bf16/AMX flags and the GEMM peak of this machine in this
precision (`machine.gemm_peak` on the step's product shapes, the better of a measurement before
and one after the rounds); each row's GFLOP/s is its median
tokens/s times its matrix-product FLOPs per token (torch's FlopCounterMode over one step,
forward and backward), so "% of peak" says how much of the machine a model's step uses.
encdec runs its own training step (`encdec.optim.train_step`: output layer fused with the loss,
fused AdamW); the peers the usual logits + `F.cross_entropy` + AdamW. Peers are optional: a
missing package skips its row. `encdec-compiled` (not in the default list) is encdec's step with
the model under `torch.compile` (`nn.Module.compile()`); its compile time falls in the warm-up.

    .venv/bin/python benchmarks/train_speed.py [--rounds 15] [--precision fp32|bf16] [--dropout 0.1]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time

import machine
import torch
import torch.nn.functional as F
from memory import peak_rss_mib, reset_peak_rss
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

V, D, H, FF, N, PAD, BOS = 8000, 256, 4, 1024, 3, 0, 2


def batches(n: int, seed: int = 0, rows: int = 128):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        s_len = torch.randint(20, 33, (rows,), generator=g)
        t_len = torch.randint(20, 33, (rows,), generator=g)
        src = torch.randint(4, V, (rows, 32), generator=g)
        tgt = torch.randint(4, V, (rows, 33), generator=g)
        pos = torch.arange(33)
        src[pos[None, :32] >= s_len[:, None]] = PAD
        tgt[pos[None, :] > t_len[:, None]] = PAD  # BOS + t_len tokens
        tgt[:, 0] = BOS
        out.append((src, tgt[:, :-1], tgt[:, 1:]))
    return out


class TorchTransformer(nn.Module):
    """torch.nn.Transformer with a shared, sqrt(D)-scaled embedding plus sinusoids, and a tied output layer:
    the paper's model written the way PyTorch's tutorial does."""

    def __init__(self, dropout: float):
        super().__init__()
        from encdec.model import sinusoids

        self.embed = nn.Embedding(V, D, padding_idx=PAD)
        self.register_buffer("pos", sinusoids(512, D), persistent=False)
        self.core = nn.Transformer(D, H, N, N, FF, dropout, batch_first=True)

    def _in(self, ids):
        return self.embed(ids) * math.sqrt(D) + self.pos[: ids.size(1)]

    def forward(self, src, tgt_in):
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.size(1))
        pad = src == PAD
        y = self.core(self._in(src), self._in(tgt_in), tgt_mask=causal, src_key_padding_mask=pad,
                      memory_key_padding_mask=pad, tgt_is_causal=True)
        return y @ self.embed.weight.t()


def build(name: str, dropout: float):
    if name == "encdec":
        from encdec.config import ModelConfig
        from encdec.model import Transformer

        model = Transformer(ModelConfig(vocab_size=V, d_model=D, n_heads=H, d_ff=FF, n_enc_layers=N, n_dec_layers=N,
                                        dropout=dropout))
        return model, lambda src, tgt_in: model(src, src != PAD, tgt_in).logits
    if name == "torch.nn.Transformer":
        model = TorchTransformer(dropout)
        return model, model
    if name == "hf-marian":
        from transformers import MarianConfig, MarianMTModel

        cfg = MarianConfig(vocab_size=V, d_model=D, encoder_layers=N, decoder_layers=N, encoder_attention_heads=H,
                           decoder_attention_heads=H, encoder_ffn_dim=FF, decoder_ffn_dim=FF, dropout=dropout,
                           activation_function="relu", pad_token_id=PAD, decoder_start_token_id=BOS, eos_token_id=3,
                           scale_embedding=True, max_position_embeddings=512)
        model = MarianMTModel(cfg)
        return model, lambda src, tgt_in: model(input_ids=src, attention_mask=(src != PAD).long(),
                                                decoder_input_ids=tgt_in).logits
    raise ValueError(name)


MODELS = ("encdec", "torch.nn.Transformer", "hf-marian")  # the default list
OPTIONAL = ("encdec-compiled",)


def encdec_step_fn(dropout: float, precision: str, compiled: bool = False):
    """encdec's own training step (`encdec.optim.train_step`: fused output loss, fused AdamW), as
    `encdec train` runs it; gradient clipping off like the peers (its norm is still computed)."""
    from encdec.config import TrainConfig
    from encdec.data.batching import Batch
    from encdec.optim import make_optimizer, train_step
    from encdec.runtime import Runtime

    model, _ = build("encdec", dropout)
    if compiled:
        model.compile()
    tc = TrainConfig(lr=1e-4, label_smoothing=0.1, clip_norm=0.0, weight_decay=0.01, max_steps=1)
    opt, rt = make_optimizer(model, tc), Runtime.create("cpu", precision)

    def step(src, tgt_in, tgt_out) -> int:
        return train_step(model, [Batch(src, src != PAD, tgt_in, tgt_out)], opt, tc.lr, tc, rt)["tokens"]

    return step, sum(p.numel() for p in model.parameters())


def step_fn(name: str, dropout: float, precision: str):
    if name.startswith("encdec"):
        return encdec_step_fn(dropout, precision, compiled=name == "encdec-compiled")
    model, fwd = build(name, dropout)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else None

    def step(src, tgt_in, tgt_out) -> int:
        if amp is not None:
            with amp:
                logits = fwd(src, tgt_in)
        else:
            logits = fwd(src, tgt_in)
        loss = F.cross_entropy(logits.float().flatten(0, 1), tgt_out.flatten(), ignore_index=PAD,
                               label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return int((tgt_out != PAD).sum())

    return step, sum(p.numel() for p in model.parameters())


def flops_per_token(step, batch) -> float:
    """Matrix-product FLOPs of one training step (forward and backward) per real target token."""
    with FlopCounterMode(display=False) as counter:
        tokens = step(*batch)
    return counter.get_total_flops() / tokens


def available(names):
    out = []
    for n in names:
        try:
            build(n.removesuffix("-compiled"), 0.0)
            out.append(n)
        except ImportError as e:
            print(f"skipping {n}: {e}", file=sys.stderr)
    return out


def rss_of(name: str, dropout: float, precision: str, steps: int) -> float:
    """Peak RSS (MiB) of a fresh process that builds `name` and trains it for `steps` steps."""
    p = subprocess.run([sys.executable, __file__, "--rss", name, "--dropout", str(dropout), "--precision", precision,
                        "--rounds", str(steps)], capture_output=True, text=True)
    return float(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else math.nan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--rss", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss:
        reset_peak_rss()
    torch.manual_seed(0)
    data = batches(4)
    if args.rss:
        step, _ = step_fn(args.rss, args.dropout, args.precision)
        for i in range(args.rounds):
            step(*data[i % len(data)])
        print(peak_rss_mib())
        return
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(MODELS + OPTIONAL))
    if unknown:
        ap.error(f"unknown models {unknown}; choose from {', '.join(MODELS + OPTIONAL)}")
    rss = {n: rss_of(n, args.dropout, args.precision, 5) for n in names}
    names = available(names)
    steps = {n: step_fn(n, args.dropout, args.precision) for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    tokens = 128 * 26  # rows x mean target length: the products of a step
    shapes = [(tokens, D, FF), (tokens, FF, D), (tokens, D, V)]
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    peak = machine.gemm_peak(shapes, dtype)  # measured before and after the rounds: the machine drifts
    for r in range(args.warmup + args.rounds):
        for n in names:
            batch = data[r % len(data)]
            t0 = time.perf_counter()
            tokens = steps[n][0](*batch)
            if r >= args.warmup:
                times[n].append(tokens / (time.perf_counter() - t0))
    peak = max(peak, machine.gemm_peak(shapes, dtype))
    rows = []
    for n in names:
        median = statistics.median(times[n])
        gflops = median * flops_per_token(steps[n][0], data[0]) / 1e9
        rows.append({"model": n, "params": steps[n][1], "median_tok_s": median,
                     "min_tok_s": min(times[n]), "max_tok_s": max(times[n]), "gflop_s": gflops,
                     "peak_rss_mib": rss[n]})
    base = next((r["median_tok_s"] for r in rows if r["model"] == "torch.nn.Transformer"), None)
    if args.json:
        print(json.dumps({"args": vars(args), "machine": machine.describe(), "gemm_peak_gflop_s": peak,
                          "threads": torch.get_num_threads(), "rows": rows}, indent=2))
        return
    print(f"{machine.describe()}; GEMM peak {peak:,.0f} GFLOP/s in {args.precision}")
    print(f"training, {args.precision}, dropout {args.dropout}, {torch.get_num_threads()} threads, "
          f"median of {args.rounds} interleaved rounds; real target tokens per second")
    print("| model | params | median tok/s | range | vs torch.nn.Transformer | GFLOP/s (of peak) | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['median_tok_s'] / base:.2f}x" if base else ""
        print(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['median_tok_s']:,.0f} | "
              f"{r['min_tok_s']:,.0f}-{r['max_tok_s']:,.0f} | {ratio} | "
              f"{r['gflop_s']:,.0f} ({r['gflop_s'] / peak:.0%}) | {r['peak_rss_mib']:,.0f} MiB |")


if __name__ == "__main__":
    main()
