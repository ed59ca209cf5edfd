#!/usr/bin/env python3
"""The encoder's matmul shapes in bf16 on the GPU, through every way torch can run them: linear
with and without bias, mm against the weight transposed on the fly or stored [in, out], addmm,
with cuBLAS or cuBLASLt preferred. Tells which call reaches the card's matmul rate for the
cache build's [tokens, 768] x [768, N] products. Prints one line per shape and call.

    python3 tools/gemm_shapes.py [--tokens 100864 15360]
"""
import argparse
import time

import torch
import torch.nn.functional as F


def rate(fn, flops, iters=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / iters
    return seconds * 1e3, flops / seconds / 1e12


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, nargs="+", default=[100864, 15360])
    args = p.parse_args()
    dev, dt = "cuda", torch.bfloat16
    print("torch", torch.__version__, torch.cuda.get_device_name())
    for m in args.tokens:
        for k, n in [(768, 768), (768, 2304), (768, 3072), (3072, 768)]:
            x = torch.randn(m, k, device=dev, dtype=dt)
            w = torch.randn(n, k, device=dev, dtype=dt) * 0.02
            wt = w.t().contiguous()
            b = torch.zeros(n, device=dev, dtype=dt)
            x3 = x.view(m // 64, 64, k) if m % 64 == 0 else x.view(1, m, k)
            flops = 2.0 * m * k * n
            calls = {
                "linear3d_bias": lambda: F.linear(x3, w, b),
                "linear2d_bias": lambda: F.linear(x, w, b),
                "linear2d_nobias": lambda: F.linear(x, w),
                "mm_w_t": lambda: torch.mm(x, w.t()),
                "mm_wt_contig": lambda: torch.mm(x, wt),
                "addmm_wt_contig": lambda: torch.addmm(b, x, wt),
                "mm_wt_then_add_bias": lambda: torch.mm(x, wt).add_(b),
            }
            for backend in ["cublas", "cublaslt"]:
                try:
                    torch.backends.cuda.preferred_blas_library(backend)
                except Exception as e:  # noqa: BLE001
                    print("cannot prefer", backend, e)
                    continue
                for name, fn in calls.items():
                    ms, tf = rate(fn, flops)
                    print(f"M={m} K={k} N={n} {backend:8s} {name:22s} {ms:7.3f} ms {tf:6.1f} TFLOP/s")
            torch.backends.cuda.preferred_blas_library("cublas")


if __name__ == "__main__":
    main()
