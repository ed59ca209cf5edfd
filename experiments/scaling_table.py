#!/usr/bin/env python3
"""Scaling table from run directories of experiments/scaling.sh (names METHOD-MODE-RANKS).

For each run: steps/s = 1 / steady seconds per step (metrics.jsonl, last epoch), samples/s =
global batch x steps/s, scaling efficiency = samples/s / (ranks x samples/s of the same method
at one rank with eager steps), the gradient all-reduce ms and bytes per step, rank 0's peak memory.
Runs that did not finish are listed as missing."""
import json
import sys
from pathlib import Path


def last_epoch(run):
    lines = [l for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return json.loads(lines[-1])


def main(paths):
    rows = []
    for path in map(Path, paths):
        method, mode, ranks = path.name.rsplit("-", 2)
        if not (path / "summary.json").exists():
            rows.append((method, mode, int(ranks), None))
            continue
        summary = json.loads((path / "summary.json").read_text())
        epoch = last_epoch(path)
        step = epoch["steady_seconds_per_step"]
        rows.append((method, mode, int(ranks), {
            "batch": summary["batch_size"], "world": summary.get("world_size", 1),
            "steps_per_s": 1.0 / step if step else float("nan"),
            "samples_per_s": summary["batch_size"] / step if step else float("nan"),
            "allreduce_ms": epoch.get("allreduce_ms_per_step", 0.0),
            "allreduce_mib": epoch.get("allreduce_bytes_per_step", 0) / 2**20,
            "peak_gib": summary["peak_memory_gib"], "steps": epoch["train_steps"],
            "epoch_s": summary["train_seconds_per_epoch"],
        }))
    # The one-rank eager run (named METHOD-strong-1) is the base of both modes.
    base = {m: r["samples_per_s"] for m, mode, n, r in rows if r and n == 1 and mode == "strong"}
    print("| method | mode | ranks | global batch | steps timed | steps/s | samples/s | scaling efficiency "
          "| all-reduce ms/step | all-reduce MiB/step | train s/epoch | peak GiB (rank 0) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for method, mode, ranks, r in rows:
        if r is None:
            print(f"| {method} | {mode} | {ranks} | | | missing | | | | | | |")
            continue
        one = base.get(method)
        eff = f"{100 * r['samples_per_s'] / (ranks * one):.0f} %" if one and mode != "graph" else ""
        print(f"| {method} | {mode} | {r['world']} | {r['batch']} | {r['steps']} | {r['steps_per_s']:.2f} "
              f"| {r['samples_per_s']:.0f} | {eff} | {r['allreduce_ms']:.2f} | {r['allreduce_mib']:.1f} "
              f"| {r['epoch_s']:.2f} | {r['peak_gib']:.2f} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: scaling_table.py RUN_DIR...")
    main(sys.argv[1:])
