"""The matrix products of a decoding step: `F.linear` against the layouts of `encdec.linear`.

For each (rows, in, out): `F.linear` with the (out, in) weight, `torch.addmm` with a contiguous
(in, out) copy, and MKL's packed format (`torch.ops.mkl._mkl_linear`, packed for that row
count), and oneDNN's linear (`torch.ops.mkldnn._linear_pointwise`) with the plain weight and with
the weight reordered for that row count (`torch.ops.mkldnn._reorder_linear_weight`);
microseconds per product, median of `--repeats` timings of `--number` calls each, hot
caches (the same operands every call).

    .venv/bin/python benchmarks/linear_speed.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F

SHAPES = ((32, 256, 768), (32, 256, 1024), (32, 1024, 256), (32, 256, 8000), (128, 256, 768), (128, 256, 8000),
          (960, 256, 768))


def micros(fn, number: int, repeats: int) -> float:
    for _ in range(number // 10 + 1):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number * 1e6)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--number", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"{torch.get_num_threads()} threads, fp32, microseconds per product (median of {args.repeats} x "
          f"{args.number})")
    print("| rows × in → out | F.linear | addmm, W^T contiguous | MKL packed | oneDNN | oneDNN reordered |")
    print("|---|---|---|---|---|---|")
    with torch.inference_mode():
        for rows, n_in, n_out in SHAPES:
            x, w, b = torch.randn(rows, n_in), torch.randn(n_out, n_in), torch.randn(n_out)
            wt = w.t().contiguous()
            packed = torch.ops.mkl._mkl_reorder_linear_weight(w, rows)
            t_lin = micros(partial(F.linear, x, w, b), args.number, args.repeats)
            t_wt = micros(partial(torch.addmm, b, x, wt), args.number, args.repeats)
            t_pk = micros(partial(torch.ops.mkl._mkl_linear, x, packed, w, b, rows), args.number, args.repeats)
            onednn = partial(torch.ops.mkldnn._linear_pointwise, x, w, b, "none", [], "")
            t_dnn = micros(onednn, args.number, args.repeats)
            reordered = torch.ops.mkldnn._reorder_linear_weight(w, rows)
            onednn_r = partial(torch.ops.mkldnn._linear_pointwise, x, reordered, b, "none", [], "")
            t_dnn_r = micros(onednn_r, args.number, args.repeats)
            print(f"| {rows} × {n_in} → {n_out} | {t_lin:,.0f} | {t_wt:,.0f} | {t_pk:,.0f} | {t_dnn:,.0f} | "
                  f"{t_dnn_r:,.0f} |")


if __name__ == "__main__":
    main()
