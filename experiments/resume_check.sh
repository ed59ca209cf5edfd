#!/usr/bin/env bash
# Exact resume on a device: the demo run for EPOCHS epochs in one go, and the same run stopped
# after HALF epochs and continued with train.resume; prints each epoch's training loss from both
# and the largest difference between their final weights and optimizer state (python3 with
# torch and safetensors). On the CPU the end-to-end test asserts bit equality; this script is
# for GPUs, where CI does not run.
#   IISAN=build-h200/iisan DEVICE=cuda WORK=/tmp/resume experiments/resume_check.sh
set -euo pipefail
iisan=${IISAN:-build/iisan}
device=${DEVICE:-cuda}
work=${WORK:-runs/resume-check}
epochs=${EPOCHS:-4}
half=${HALF:-2}
rm -rf "$work"
common=(--workdir "$work" --set train.device="$device" --set train.patience=100 ${EXTRA:-})
"$iisan" demo "${common[@]}" --set train.epochs="$epochs" --set name=whole > "$work.whole.log" 2>&1
"$iisan" demo "${common[@]}" --set train.epochs="$half" --set name=part > "$work.part.log" 2>&1
"$iisan" demo "${common[@]}" --set train.epochs="$epochs" --set name=part --set train.resume=true > "$work.resume.log" 2>&1
grep -h "resumed after" "$work.resume.log" || true
python3 - "$work/runs" <<'PY'
import json, sys
from safetensors.torch import load_file
runs = sys.argv[1]
def losses(name):
    return [json.loads(l)["train_loss"] for l in open(f"{runs}/{name}/metrics.jsonl") if l.strip()]
a, b = losses("whole"), losses("part")
for i, (x, y) in enumerate(zip(a, b), 1):
    print(f"epoch {i}: loss whole {x!r} resumed {y!r} {'equal' if x == y else 'DIFFERENT'}")
for f in ["best.safetensors", "last/model.safetensors", "last/trainer.safetensors"]:
    ta, tb = load_file(f"{runs}/whole/checkpoints/{f}"), load_file(f"{runs}/part/checkpoints/{f}")
    worst = max((ta[k].double() - tb[k].double()).abs().max().item() for k in ta if ta[k].is_floating_point())
    same = all((ta[k] == tb[k]).all().item() for k in ta)
    print(f"{f}: {len(ta)} tensors, bitwise equal: {same}, max abs difference {worst:.3e}")
sa, sb = (json.load(open(f"{runs}/{n}/summary.json")) for n in ("whole", "part"))
print("best epoch", sa["best_epoch"], sb["best_epoch"], "test equal:", sa["test"] == sb["test"])
PY
