#!/usr/bin/env bash
# Single-GPU speed, round 2 (issue 17): cached IISAN on Amazon Scientific with base-size BERT and
# ViT (random weights: no pretrained weights exist on these machines), text+image, batch 64.
#  1. the cache build with the default settings (cache.dtype=auto: bf16 on a GPU), end to end,
#     and with cache.dtype=float32 (the full-precision runs below read it);
#  2. cached IISAN, 3 epochs, with the defaults (bf16 cache, train.matmul_precision=auto: tf32)
#     and in full precision (float32 cache, float32 matrix products): train and validation
#     s/epoch, peak memory, start-up (summary.json);
#  3. seeds 1-3 x both precisions, SEED_EPOCHS epochs each: the metrics' run-to-run spread;
#     and once more with eval.memory_mb=64, for the peak's phases;
#  4. with PROFILE=1 (needs train.profile_steps), the kernel profile of graphed and eager steps.
# Every run's summary.json, config.json and metrics.jsonl, and the profiles, are packed into
# $OUT/speed.tgz (the device tool returns a limited number of files).
#
# Usage, on the GPU machine from the repository root, with iisan built against CUDA LibTorch:
#   IISAN=build-h200/iisan SHARED=.carry/shared WORK=/tmp/speed OUT=$OUT experiments/speed_h200.sh
set -euo pipefail
iisan=${IISAN:-build/iisan}
shared=${SHARED:-../shared/data}
work=${WORK:-runs/speed}
out=${OUT:-$work/out}
seed_epochs=${SEED_EPOCHS:-5}
mkdir -p "$work/data" "$out"
quiet() { grep -v '^[IW][0-9]' || true; }  # glog's lines stay in the logs, not on the console
for f in users.tsv items.tsv; do [ -f "$work/data/$f" ] || cp "$shared/amazon-scientific/$f" "$work/data/$f"; done
"$iisan" data images "$work/data" --size 224 2>&1 | quiet | tail -2

common=(--set data.dir="$work/data" --set model.text_backbone="$shared/bert-base-uncased"
        --set model.image_backbone="$shared/vit-base-patch16-224" --set train.device=cuda
        --set cache.dir="$work/cache" --set run_root="$work/runs")
fp32=(--set cache.dtype=float32 --set train.matmul_precision=float32)
start=$(date +%s%N)
{ "$iisan" cache build "${common[@]}" 2>&1 || echo "FAILED: cache build"; } | quiet | tail -3
echo "cache build, default settings: $(( ($(date +%s%N) - start) / 1000000 )) ms end to end" | tee "$out/cache-build.txt"
start=$(date +%s%N)
{ "$iisan" cache build "${common[@]}" "${fp32[@]}" 2>&1 || echo "FAILED: cache build float32"; } | quiet | tail -3
echo "cache build, cache.dtype=float32: $(( ($(date +%s%N) - start) / 1000000 )) ms end to end" | tee -a "$out/cache-build.txt"

runs=()
train() {  # name, then --set options
  local name=$1; shift
  local t0; t0=$(date +%s%N)
  { "$iisan" train "${common[@]}" --set model.method=iisan --set train.patience=100 --set name="$name" "$@" 2>&1 \
      || echo "FAILED: $name"; } | quiet | tail -2
  echo "$name: $(( ($(date +%s%N) - t0) / 1000000 )) ms process wall time" | tee -a "$out/wall.txt"
  runs+=("$work/runs/$name")
}
train iisan --set train.epochs=3
train iisan-fp32 "${fp32[@]}" --set train.epochs=3
# The memory_phases of summary.json at half the evaluation budget (run H: the training step,
# not evaluation, sets the peak at the default 128 MiB).
train iisan-eval64 --set train.epochs=3 --set eval.memory_mb=64
for seed in 1 2 3; do
  train "seed$seed" --set seed=$seed --set train.epochs="$seed_epochs"
  train "seed$seed-fp32" "${fp32[@]}" --set seed=$seed --set train.epochs="$seed_epochs"
done
if [ "${PROFILE:-0}" = 1 ]; then
  train profile-graph --set train.epochs=1 --set train.profile_steps=50
  train profile-eager --set train.epochs=1 --set train.profile_steps=50 --set train.cuda_graph=false
fi
"$iisan" report efficiency "$work/runs/iisan" "$work/runs/iisan-fp32" --out "$out/report" 2>&1 | tail -6 || true
for run in "${runs[@]}"; do
  mkdir -p "$out/runs/$(basename "$run")"
  for f in summary.json config.json metrics.jsonl; do [ -f "$run/$f" ] && cp "$run/$f" "$out/runs/$(basename "$run")/"; done
  [ -d "$run/profile" ] && cp -r "$run/profile" "$out/runs/$(basename "$run")/"
done
packed=(runs cache-build.txt wall.txt)
[ -d "$out/report" ] && packed+=(report)
tar czf "$out/speed.tgz" -C "$out" "${packed[@]}" && rm -rf "$out/runs" "$out/report"
echo "packed $out/speed.tgz"
