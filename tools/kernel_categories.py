#!/usr/bin/env python3
"""Sums the rows of per-kernel profiles into kinds of work (GEMM, attention, normalisation, ...),
per step, so that two profiles of the same work (ours and transformers', or two commits) compare
at a glance. Reads the <phase>.json files that core/train/kernel_profile.cpp and
tools/h200_backbone_reference.py --profile-dir write:

    python3 tools/kernel_categories.py ours/vit_forward.json transformers/vit_forward.json
"""
import json
import re
import sys

# First match wins; matched against the kernel's name in lower case.
CATEGORIES = [
    ("attention", r"flash|fmha|attention|efficient_attention|cutlass.*kernel.*attn"),
    ("gemm", r"gemm|nvjet|cutlass|xmma|s1688|s16816|sm90|sm80|cublas|splitk"),
    ("convolution", r"conv|implicit_convolve|cudnn"),
    ("layer norm", r"layer_norm|layernorm"),
    ("gelu / activations", r"gelu|relu|silu|tanh|sigmoid"),
    ("softmax", r"softmax"),
    ("reductions", r"reduce_kernel|reduce"),
    ("copies / casts / layout", r"copy|cat|memcpy|contiguous|transpose|index|gather|scatter"),
    ("fills", r"fill|memset|zero"),
    ("element-wise", r"elementwise|vectorized|unrolled|add|mul|div"),
]


def categorize(name):
    lower = name.lower()
    for category, pattern in CATEGORIES:
        if re.search(pattern, lower):
            return category
    return "other"


def summarize(path):
    with open(path) as f:
        profile = json.load(f)
    steps = max(int(profile.get("steps", 1)), 1)
    sums = {}
    for row in profile["kernels"]:
        category = categorize(row["name"])
        calls, seconds = sums.get(category, (0, 0.0))
        sums[category] = (calls + int(row["calls"]), seconds + float(row["total_seconds"]))
    return profile, steps, sums


def main(paths):
    if not paths:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    for path in paths:
        profile, steps, sums = summarize(path)
        total = sum(seconds for _, seconds in sums.values())
        print(f"== {path}: {profile.get('step_name', 'step')}, {steps} steps; "
              f"{total / steps * 1e3:.3f} ms of device time a step")
        print(f"  {'kind':<26}{'ms/step':>10}{'share':>8}{'kernels/step':>14}")
        for category, (calls, seconds) in sorted(sums.items(), key=lambda kv: -kv[1][1]):
            share = seconds / total if total > 0 else 0.0
            print(f"  {category:<26}{seconds / steps * 1e3:>10.3f}{share:>8.1%}{calls / steps:>14.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
