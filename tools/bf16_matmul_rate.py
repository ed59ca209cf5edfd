#!/usr/bin/env python3
"""The card's measured dense bf16 matmul rate (TFLOP/s), the yardstick of the cache build's
forward passes (issue 6): square matmuls of several sizes, timed with CUDA events after a
warm-up, best size reported. Usage: python3 tools/bf16_matmul_rate.py [--json OUT]"""
import argparse
import json

import torch


def rate(n, reps=50):
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(reps):
        a @ b
    stop.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(stop) / 1e3 / reps
    return 2 * n ** 3 / seconds / 1e12


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    args = parser.parse_args()
    rates = {n: rate(n) for n in (2048, 4096, 8192, 16384)}
    best = max(rates.values())
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "bf16_tflops_by_size": rates, "bf16_tflops": best}
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
