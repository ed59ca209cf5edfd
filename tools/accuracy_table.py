#!/usr/bin/env python3
"""The accuracy comparison's table and plot (issue 19) from experiments/accuracy_text_h200.sh's output.

Reads DIR/trials/trial-*/{summary,config,metrics} (the sweep's trials; or DIR/trials.jsonl and
DIR/trial-curves.jsonl, the compact form committed under experiments/results), DIR/timing/*/summary.json and
DIR/timing/efficiency.md (each method alone on the GPU) and DIR/pretrain.json. For each method,
the learning-rate scale with the highest validation HR@10 averaged over the seeds is chosen
(selection on validation only); that scale's seeds give the test HR@10 and NDCG@10 as mean,
sample standard deviation and range. Trials that ran to the epoch cap and trials stopped by
train.patience both count; the table says how many hit the cap and how fast validation HR@10 was
still rising over their last 5 epochs. Writes DIR/accuracy.md and DIR/accuracy.svg, and prints
the table. Standard library only.

Usage: python3 tools/accuracy_table.py DIR
"""
import glob
import json
import math
import os
import statistics
import sys

LABELS = {"iisan": "IISAN (cached)", "fft": "FFT", "adapter": "Adapter", "lora": "LoRA", "bitfit": "BitFit",
          "iisan-uncached": "IISAN (uncached)"}
ORDER = ["iisan", "iisan-uncached", "fft", "adapter", "lora", "bitfit"]


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def finite(values):
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def spread(values):
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return mean, sd, min(values), max(values)


def late_gain(values, window=5):
    """Validation HR@10 gained per epoch over the last `window` epochs of a run (None if unknown):
    how far from converged a run was when it stopped."""
    if len(values) <= window:
        return None
    return (values[-1] - values[-1 - window]) / window


def curve_of(path):
    """The finite validation HR@10 of every epoch in a metrics.jsonl (a torn last line skipped)."""
    values = []
    if not os.path.exists(path):
        return values
    for line in open(path, encoding="utf-8"):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        valid = record.get("valid")
        hr = valid.get("HR@10") if isinstance(valid, dict) else None
        if isinstance(hr, (int, float)) and math.isfinite(hr):
            values.append(hr)
    return values


def read_trials(root, skipped):
    """(name, summary, method, seed, lr scale, validation HR@10 per epoch) of every trial: from
    the script's DIR/trials/trial-*/ folders, or from the committed DIR/trials.jsonl and
    DIR/trial-curves.jsonl that experiments/results/accuracy-text-h200 keeps instead."""
    folders = sorted(glob.glob(os.path.join(root, "trials", "trial-*")))
    if folders:
        for folder in folders:
            name = os.path.basename(folder)
            if not os.path.exists(os.path.join(folder, "summary.json")):
                skipped.append(name + " (no summary: unfinished)")
                continue
            summary, config = load(os.path.join(folder, "summary.json")), load(os.path.join(folder, "config.json"))
            yield (name, summary, config["model"]["method"], config["seed"], config["train"]["lr"]["scale"],
                   curve_of(os.path.join(folder, "metrics.jsonl")))
        return
    curves = {}
    curves_path = os.path.join(root, "trial-curves.jsonl")
    if os.path.exists(curves_path):
        for line in open(curves_path, encoding="utf-8"):
            r = json.loads(line)
            if isinstance(r.get("valid_hr10"), (int, float)) and math.isfinite(r["valid_hr10"]):
                curves.setdefault(r["trial"], []).append((r["epoch"], r["valid_hr10"]))
    for line in open(os.path.join(root, "trials.jsonl"), encoding="utf-8"):
        r = json.loads(line)
        yield (r["trial"], r["summary"], r["method"], r["seed"], r["lr_scale"],
               [v for _, v in sorted(curves.get(r["trial"], []))])


def tpme_by_run(path):
    """{run name: TPME} from an `iisan report efficiency` table."""
    found = {}
    if not os.path.exists(path):
        return found
    for line in open(path, encoding="utf-8"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and cells[0] not in ("method", "---") and not set(cells[0]) <= set("-:"):
            try:
                found[cells[1]] = float(cells[-1])
            except ValueError:
                pass
    return found


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    root = sys.argv[1]
    trials = {}
    skipped = []
    for name, summary, method, seed, scale, curve in read_trials(root, skipped):
        numbers = [summary["valid"]["HR@10"], summary["test"]["HR@10"], summary["test"]["NDCG@10"]]
        # "completed": ran the sweep's epoch cap; "early_stopped": stopped by train.patience.
        # Both are finished trainings; anything else (failed, pruned, unfinished) is left out.
        if summary.get("status") not in ("completed", "early_stopped") or not finite(numbers):
            skipped.append(f"{name} ({summary.get('status')})")
            continue
        trials.setdefault(method, {}).setdefault(scale, []).append({
            "seed": seed, "valid": summary["valid"]["HR@10"], "test_hr": summary["test"]["HR@10"],
            "test_ndcg": summary["test"]["NDCG@10"], "best_epoch": summary["best_epoch"],
            "epochs": summary["epochs_run"], "popularity": summary.get("popularity_test", {}).get("HR@10"),
            "params": summary["trainable_parameters"], "capped": summary.get("status") == "completed",
            "late_gain": late_gain(curve)})
    tpme = tpme_by_run(os.path.join(root, "timing", "efficiency.md"))

    rows = []
    for method in sorted(trials, key=lambda m: ORDER.index(m) if m in ORDER else len(ORDER)):
        by_scale = trials[method]
        seeds_wanted = max(len(v) for v in by_scale.values())
        # Selection on validation only: the scale with the best mean validation HR@10 among
        # those with every seed.
        complete = {s: v for s, v in by_scale.items() if len(v) == seeds_wanted}
        chosen = max(complete, key=lambda s: statistics.fmean(t["valid"] for t in complete[s]))
        runs = complete[chosen]
        timing_path = os.path.join(root, "timing", method, "summary.json")
        timing = load(timing_path) if os.path.exists(timing_path) else {}
        rows.append({
            "method": method, "scale": chosen, "seeds": sorted(t["seed"] for t in runs),
            "scales": {s: statistics.fmean(t["valid"] for t in v) for s, v in sorted(by_scale.items())},
            "scale_counts": {s: len(v) for s, v in sorted(by_scale.items())},
            "hr": spread([t["test_hr"] for t in runs]), "ndcg": spread([t["test_ndcg"] for t in runs]),
            "valid": spread([t["valid"] for t in runs]),
            "best_epoch": statistics.fmean(t["best_epoch"] for t in runs),
            "epochs": statistics.fmean(t["epochs"] for t in runs),
            "capped": sum(t["capped"] for t in runs),
            "late_gain": (statistics.fmean(t["late_gain"] for t in runs)
                          if all(t["late_gain"] is not None for t in runs) else None),
            "params": runs[0]["params"], "popularity": runs[0]["popularity"],
            "train_s": timing.get("train_seconds_per_epoch"), "peak_gib": timing.get("peak_memory_gib"),
            "memory_kind": timing.get("peak_memory_kind"), "tpme": tpme.get(method)})

    def pct(v, digits=2):
        return "–" if v is None or not math.isfinite(v) else f"{100 * v:.{digits}f}"

    header = ("| method | lr scale (valid HR@10 % by scale) | test HR@10 % mean ± sd [min, max] | "
              "test NDCG@10 % mean ± sd [min, max] | valid HR@10 % | best epoch (of run) | runs at the epoch cap | "
              "valid HR@10 gain per epoch, last 5 (points) | train s/epoch | peak GPU GiB | trainable params | TPME |")
    lines = [header, "|" + "---|" * 12]
    for r in rows:
        scales = ", ".join(f"{s:g}: {pct(v)}" + ("" if r["scale_counts"][s] == len(r["seeds"]) else
                                                  f" ({r['scale_counts'][s]} seeds)")
                           for s, v in r["scales"].items())
        hr, ndcg = r["hr"], r["ndcg"]
        lines.append(
            f"| {LABELS.get(r['method'], r['method'])} | **{r['scale']:g}** ({scales}) | "
            f"{pct(hr[0])} ± {pct(hr[1])} [{pct(hr[2])}, {pct(hr[3])}] | "
            f"{pct(ndcg[0])} ± {pct(ndcg[1])} [{pct(ndcg[2])}, {pct(ndcg[3])}] | {pct(r['valid'][0])} | "
            f"{r['best_epoch']:.1f} ({r['epochs']:.1f}) | {r['capped']} of {len(r['seeds'])} | "
            f"{'–' if r['late_gain'] is None else format(100 * r['late_gain'], '+.3f')} | "
            f"{'–' if r['train_s'] is None else format(r['train_s'], '.2f')} | "
            f"{'–' if r['peak_gib'] is None else format(r['peak_gib'], '.2f')} | {r['params']:,} | "
            f"{'–' if r['tpme'] is None else format(r['tpme'], '.3f')} |")
    table = "\n".join(lines)
    notes = []
    if rows and rows[0]["popularity"] is not None:
        notes.append(f"Popularity baseline, test HR@10: {pct(rows[0]['popularity'])} %.")
    if skipped:
        notes.append("Left out (failed, pruned, unfinished or non-finite): " + ", ".join(skipped) + ".")
    seeds = sorted({tuple(r["seeds"]) for r in rows})
    notes.append(f"Seeds per method at the chosen scale: {', '.join(str(list(s)) for s in seeds)}.")
    if os.path.exists(os.path.join(root, "pretrain.json")):
        p = load(os.path.join(root, "pretrain.json"))
        notes.append(f"Backbone: {p['recipe']['config']} pretrained {p['recipe']['steps']} steps × "
                     f"{p['recipe']['batch']} titles, final MLM loss {p['final_mlm_loss']:.3f}, held-out masked-token "
                     f"accuracy {p['held_out_accuracy_before']:.3f} → {p['held_out_accuracy']:.3f} "
                     f"({p['held_out_titles']} titles), {p['train_seconds']:.0f} s on {p['device']}.")
    text = table + "\n\n" + "\n".join("- " + n for n in notes) + "\n"
    with open(os.path.join(root, "accuracy.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(root, "accuracy.svg"), "w", encoding="utf-8") as f:
        f.write(svg(rows))
    print(text)


def svg(rows):
    """Test HR@10 and NDCG@10 per method: bars at the seeds' mean, whiskers at their range, dots
    at each seed."""
    width, height, left, top, bottom = 640, 320, 60, 40, 50
    panel = (width - left - 20) / max(len(rows), 1)
    top_value = max([r["hr"][3] for r in rows] + [1e-9]) * 1.15
    scale = (height - top - bottom) / top_value

    def y(v):
        return height - bottom - v * scale

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11">',
             f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">Amazon Scientific, text only: test '
             f'HR@10 and NDCG@10 (%), mean of seeds, range as whiskers</text>']
    for tick in range(6):
        v = top_value * tick / 5
        parts.append(f'<line x1="{left}" x2="{width - 20}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{100 * v:.1f}</text>')
    for i, r in enumerate(rows):
        x0 = left + i * panel
        for j, (key, colour) in enumerate((("hr", "#4878d0"), ("ndcg", "#ee854a"))):
            mean, _, low, high = r[key]
            bx = x0 + panel * (0.18 + 0.34 * j)
            bw = panel * 0.3
            parts.append(f'<rect x="{bx:.1f}" y="{y(mean):.1f}" width="{bw:.1f}" height="{mean * scale:.1f}" '
                         f'fill="{colour}"/>')
            cx = bx + bw / 2
            parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(low):.1f}" y2="{y(high):.1f}" stroke="#222"/>')
        parts.append(f'<text x="{x0 + panel / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle">'
                     f'{LABELS.get(r["method"], r["method"])}</text>')
    parts.append(f'<rect x="{left}" y="{height - 22}" width="10" height="10" fill="#4878d0"/>'
                 f'<text x="{left + 14}" y="{height - 13}">HR@10</text>'
                 f'<rect x="{left + 70}" y="{height - 22}" width="10" height="10" fill="#ee854a"/>'
                 f'<text x="{left + 84}" y="{height - 13}">NDCG@10</text>')
    parts.append("</svg>\n")
    return "\n".join(parts)


if __name__ == "__main__":
    main()
