#!/usr/bin/env bash
# The paper's accuracy claim on our machines (issue 19): IISAN (cached) against FFT, Adapter, LoRA
# and BitFit, text modality, Amazon Scientific, on a small BERT pretrained here by masked-language
# modelling on the item titles (tools/pretrain_text_backbone.py; no pretrained weights exist on
# these machines).
#
# 1. Pretrains the backbone (skipped when BACKBONE names a folder that has one).
# 2. One `iisan sweep` over method x seed x train.lr.scale (grid; early stopping on validation
#    HR@10 with train.patience, at most MAX_EPOCHS epochs), trials packed K to the GPU. Every
#    method gets the same budget: the same 3 learning-rate scales (each scales all of the
#    method's reference learning rates together) and the same 3 seeds.
# 3. Each method once more alone on the GPU for 2 epochs: train s/epoch, peak memory, TPME
#    (packed trials share the GPU, so their timings are not the method's own).
# 4. Copies every trial's summary, config and metrics and the timing runs to $OUT;
#    tools/accuracy_table.py turns them into the table and the plot.
#
# Usage, on the GPU machine from the repository root, with iisan built against CUDA LibTorch:
#   IISAN=build-h200/iisan SHARED=.carry/shared WORK=/tmp/acc OUT=$OUT experiments/accuracy_text_h200.sh
# Everything it writes to $OUT is packed into $OUT/accuracy-text.tgz at the end (the device tool
# returns a limited number of files; one archive always comes back whole).
# Cost, measured on the H200 (2026-12-02, session 8): the pretraining 65 s (beside the 100 s
# build); the sweep 779 s for the 45 trials with 15 packed (208 trials/h); the timing runs about
# 1 min. Give it SWEEP_SECONDS=1080 (a cap: it ends when the trials do). The device tool's calls
# last at most 600 s: start this script detached (setsid ... &) and wait for its 'packed' line
# over two calls (experiments/results/accuracy-text-h200.md has the commands).
# A quick CPU check of the plumbing (random backbone, 3 steps an epoch):
#   DEVICE=cpu BACKBONE=runs/bert-small METHODS='"iisan", "fft"' SEEDS=1 SCALES=1 MAX_EPOCHS=1 \
#     TRAIN_EXTRA='"max_steps_per_epoch": 3,' K=2 experiments/accuracy_text_h200.sh
set -euo pipefail
iisan=${IISAN:-build/iisan}
shared=$(realpath "${SHARED:-../shared/data}")
mkdir -p "${WORK:-runs/accuracy-text}" "${OUT:=runs/accuracy-text/out}"
work=$(realpath "${WORK:-runs/accuracy-text}")
device=${DEVICE:-cuda}
k=${K:-15}
methods=${METHODS:-'"iisan", "fft", "adapter", "lora", "bitfit"'}
seeds=${SEEDS:-1, 2, 3}
scales=${SCALES:-0.5, 1, 2}
max_epochs=${MAX_EPOCHS:-30}
patience=${PATIENCE:-3}
sweep_seconds=${SWEEP_SECONDS:-330}

backbone=${BACKBONE:-$work/bert-small-mlm}
if [ ! -f "$backbone/config.json" ]; then
  python3 tools/pretrain_text_backbone.py --items "$shared/amazon-scientific/items.tsv" \
    --vocab "$shared/bert-base-uncased/vocab.txt" --config experiments/backbones/bert-small/config.json \
    --out "$backbone" --steps "${PRETRAIN_STEPS:-2500}" --batch 256 --lr 1e-3 --seed 1
fi
[ -f "$backbone/pretrain.json" ] && cp "$backbone/pretrain.json" "$OUT/pretrain.json"

cat > "$work/spec.json" <<SPEC
{
  "name": "accuracy-text",
  "base": {
    "data": {"dir": "$shared/amazon-scientific"},
    "model": {"modality": "text", "text_backbone": "$backbone"},
    "cache": {"dir": "$work/cache", "dtype": "bfloat16"},
    "train": {${TRAIN_EXTRA:-} "device": "$device", "patience": $patience}
  },
  "space": {
    "model.method": {"grid": [$methods]},
    "seed": {"grid": [$seeds]},
    "train.lr.scale": {"grid": [$scales]}
  },
  "metric": "valid.hr@10", "searcher": "grid", "concurrency": $k, "seed": 1,
  "early_stopping": {"rule": "none", "max_epochs": $max_epochs}
}
SPEC
cp "$work/spec.json" "$OUT/spec.json"
start=$(date +%s)
status=0
# At the deadline the scheduler is asked to stop (SIGTERM: running trials finish, no new ones
# start), and killed 30 s later; what finished is kept either way.
OMP_NUM_THREADS=1 timeout -k 30 "$sweep_seconds" "$iisan" sweep run "$work/spec.json" --dir "$work/sweep" \
  --trials-per-gpu "$k" --progress-every 20 2>&1 | grep -v '^[IW][0-9]' || status=$?
echo "sweep: exit $status after $(( $(date +%s) - start )) s"
pkill -f "sweep worker" 2>/dev/null && sleep 2 || true
"$iisan" sweep report "$work/sweep" | tail -3 || true
mkdir -p "$OUT/trials"
for trial in "$work"/sweep/trials/trial-*; do
  [ -d "$trial" ] || continue
  name=$(basename "$trial")
  mkdir -p "$OUT/trials/$name"
  for f in summary.json config.json metrics.jsonl; do [ -f "$trial/$f" ] && cp "$trial/$f" "$OUT/trials/$name/"; done
done
cp -r "$work/sweep/report" "$OUT/sweep-report" 2>/dev/null || true

# Each method alone on the device, 2 epochs at its reference learning rates.
timing=()
for method in $(echo "$methods" | tr -d '",'); do
  OMP_NUM_THREADS=4 "$iisan" train --set model.method="$method" --set model.modality=text \
    --set model.text_backbone="$backbone" --set data.dir="$shared/amazon-scientific" \
    --set cache.dir="$work/cache" --set cache.dtype=bfloat16 --set train.device="$device" \
    --set train.epochs=2 --set train.patience=100 --set run_root="$work/timing" --set name="$method" \
    $(echo "${TRAIN_EXTRA:-}" | sed -n 's/.*"max_steps_per_epoch": *\([0-9]*\).*/--set train.max_steps_per_epoch=\1/p') \
    2>&1 | grep -v '^[IW][0-9]' | tail -2
  timing+=("$work/timing/$method")
  mkdir -p "$OUT/timing/$method"
  cp "$work/timing/$method/summary.json" "$work/timing/$method/config.json" "$OUT/timing/$method/"
done
"$iisan" report efficiency "${timing[@]}" --out "$OUT/timing" | tail -12
packed=(spec.json trials timing)
for f in pretrain.json sweep-report; do [ -e "$OUT/$f" ] && packed+=("$f"); done
tar czf "$OUT/accuracy-text.tgz" -C "$OUT" "${packed[@]}" && (cd "$OUT" && rm -rf "${packed[@]}")
echo "packed $OUT/accuracy-text.tgz: tar xzf it, then python3 tools/accuracy_table.py on the folder"
