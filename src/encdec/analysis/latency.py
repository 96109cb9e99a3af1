"""Latency against depth, heads and width on the current device (random weights; medians).

Three clocks per model: the encoder over one source sentence (batch 1, `src_len` tokens); one
incremental decoder step (batch 1, KV cache, averaged over `decode_tokens` steps); and one
training step (forward, backward and AdamW) on a batch of about `train_tokens` target tokens.
Each is the median of `repeats` timed runs after one warm-up run.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from encdec.config import ModelConfig
from encdec.model import Transformer

if TYPE_CHECKING:
    from encdec.runtime import Runtime


def _median_seconds(fn, repeats: int, sync) -> float:
    fn()  # warm-up (allocations, kernel selection)
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(cfg: ModelConfig, rt: Runtime, *, src_len: int = 30, decode_tokens: int = 20, train_tokens: int = 3000,
            repeats: int = 5, seed: int = 0) -> dict:
    """Milliseconds for the encoder, one decoder step and one training step of the model `cfg`."""
    torch.manual_seed(seed)
    model = Transformer(cfg).to(rt.device)
    sync = torch.cuda.synchronize if rt.device.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, cfg.vocab_size, (1, src_len), generator=g).to(rt.device)
    mask = torch.ones_like(src, dtype=torch.bool)
    first = torch.full((1, 1), 2, dtype=torch.long, device=rt.device)
    model.eval()

    def encode():
        with torch.inference_mode(), rt.decode_autocast():
            model.encode(src, mask)

    def decode():
        with torch.inference_mode(), rt.decode_autocast():
            cache = model.start_decoding(src, mask)
            tokens = first
            for _ in range(decode_tokens):
                logits, cache = model.decode_step(tokens, cache)
                tokens = logits[:, -1].argmax(-1, keepdim=True)

    def encode_only():
        with torch.inference_mode(), rt.decode_autocast():
            model.start_decoding(src, mask)

    rows = max(1, train_tokens // src_len)
    bsrc = torch.randint(4, cfg.vocab_size, (rows, src_len), generator=g).to(rt.device)
    btgt = torch.randint(4, cfg.vocab_size, (rows, src_len + 1), generator=g).to(rt.device)
    bmask = torch.ones_like(bsrc, dtype=torch.bool)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        model.train()
        with rt.autocast():
            logits = model(bsrc, bmask, btgt[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), btgt[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.eval()

    enc_s = _median_seconds(encode, repeats, sync)
    dec_s = (_median_seconds(decode, repeats, sync) - _median_seconds(encode_only, repeats, sync)) / decode_tokens
    train_s = _median_seconds(train_step, repeats, sync)
    n_params = sum(p.numel() for p in model.parameters())
    return {"params": n_params, "encoder_ms": 1e3 * enc_s, "decoder_step_ms": 1e3 * max(dec_s, 0.0),
            "train_step_ms": 1e3 * train_s, "train_tok_s": rows * src_len / train_s}


def sweep_configs(base: ModelConfig, depths=(1, 2, 4, 6, 8), heads=(1, 2, 4, 8, 16),
                  widths=(128, 256, 512), wirings=()) -> list[tuple[str, int | str, ModelConfig]]:
    """(axis, value, config) triples: depth N = n_enc = n_dec; heads at fixed d_model (d_head = d_model/h);
    width d_model with d_ff = 4 d_model at fixed heads; cross-attention wiring schemes."""
    bad = [h for h in heads if base.d_model % h] + [d for d in widths if d % base.n_heads]
    if bad:
        raise ValueError(f"heads/widths {bad} do not divide: d_model={base.d_model} must be a multiple of every "
                         f"head count, and every width a multiple of n_heads={base.n_heads}")
    out: list[tuple[str, int | str, ModelConfig]] = [
        ("depth", n, replace(base, n_enc_layers=n, n_dec_layers=n)) for n in depths]
    out += [("heads", h, replace(base, n_heads=h, d_head=None)) for h in heads]
    out += [("width", d, replace(base, d_model=d, d_ff=4 * d, d_head=None)) for d in widths]
    out += [("wiring", w, replace(base, wiring=w)) for w in wirings]
    return out
