#!/usr/bin/env bash
# The sweep benchmark (issue 16): a 64-trial sweep of cached IISAN on Amazon Scientific (base-size
# BERT and ViT with random weights, one generated 224x224 JPEG per item): learning rate
# log-uniform, dropout, embedding size and seed, 20 epochs at most, ASHA (reduction factor 3,
# grace period 1). MODE=serial runs it one trial at a time (one worker); MODE=packed runs K
# workers on the one GPU (K=16 by default, under CUDA MPS when the machine has it). Prints the
# sweep's wall time and trials/hour, samples GPU utilisation and memory with nvidia-smi
# (smi-MODE.csv) and ends with `iisan sweep report`.
#
# Usage, from the repository root on the GPU machine, with iisan built against CUDA LibTorch:
#   IISAN=build-h200/iisan SHARED=.carry/shared WORK=/tmp/sweep MODE=packed K=16 experiments/sweep_h200.sh
set -euo pipefail
iisan=${IISAN:-build/iisan}
shared=$(realpath "${SHARED:-../shared/data}")
mkdir -p "${WORK:-runs/sweep-h200}"
work=$(realpath "${WORK:-runs/sweep-h200}")
mode=${MODE:-packed}
k=${K:-16}
trials=${TRIALS:-64}
mkdir -p "$work/data"
for f in users.tsv items.tsv; do [ -f "$work/data/$f" ] || cp "$shared/amazon-scientific/$f" "$work/data/$f"; done
[ -d "$work/data/images" ] || "$iisan" data images "$work/data" --size 224 > /dev/null

concurrency=$k
[ "$mode" = serial ] && concurrency=1
cat > "$work/spec-$mode.json" <<SPEC
{
  "name": "scientific-$mode",
  "base": {
    "data": {"dir": "$work/data"},
    "model": {"method": "iisan", "text_backbone": "$shared/bert-base-uncased",
              "image_backbone": "$shared/vit-base-patch16-224"},
    "cache": {"dir": "$work/cache", "dtype": "bfloat16"},
    "train": {"device": "cuda", "patience": 100}
  },
  "space": {
    "train.lr.recsys": {"loguniform": [1e-5, 1e-3]},
    "model.dropout": {"uniform": [0.0, 0.3]},
    "model.embedding_dim": {"choice": [32, 64, 128]},
    "seed": {"int": [1, 10000]}
  },
  "metric": "valid.hr@10",
  "trials": $trials, "concurrency": $concurrency, "seed": 1,
  "early_stopping": {"rule": "asha", "reduction_factor": 3, "grace_period": 1, "max_epochs": 20}
}
SPEC
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -lms 500 > "$work/smi-$mode.csv" &
smi=$!
start=$(date +%s.%N)
"$iisan" sweep run "$work/spec-$mode.json" --dir "$work/sweep-$mode" --trials-per-gpu "$concurrency" \
  --progress-every 15 2>&1 | grep -v '^[IW][0-9]'
end=$(date +%s.%N)
kill $smi
python3 - "$work/smi-$mode.csv" "$start" "$end" "$trials" "$mode" "$work/sweep-$mode/sweep.db" <<'PY'
import json, sqlite3, sys
rows = [l.split(',') for l in open(sys.argv[1]) if l.count(',') == 2]
util = [float(r[1].split()[0]) for r in rows]
mem = [float(r[2].split()[0]) for r in rows]
wall = float(sys.argv[3]) - float(sys.argv[2])
n = int(sys.argv[4])
print(f"{sys.argv[5]}: {n} trials in {wall:.1f} s end to end = {3600 * n / wall:.0f} trials/hour; "
      f"GPU utilisation mean {sum(util) / max(len(util), 1):.0f} % over {len(util)} samples; "
      f"peak GPU memory used {max(mem, default=0) / 1024:.2f} GiB (whole device, every process)")
db = sqlite3.connect(sys.argv[6])
rows = db.execute("SELECT status, epochs, seconds, summary FROM trials").fetchall()
peaks = [json.loads(r[3]).get("peak_memory_bytes", 0) for r in rows if r[3]]
epochs = sum(r[1] for r in rows)
status = {}
for r in rows:
    status[r[0]] = status.get(r[0], 0) + 1
print(f"{sys.argv[5]}: {len(rows)} trials {status}, {epochs} epochs in all; per-trial peak CUDA allocator memory "
      f"max {max(peaks, default=0) / 2**30:.2f} GiB; trial seconds summed {sum(r[2] for r in rows):.0f}")
PY
"$iisan" sweep report "$work/sweep-$mode" | tail -3
