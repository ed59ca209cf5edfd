#!/usr/bin/env bash
# Accuracy sanity of every method (IISAN.md §5) on the built-in synthetic dataset with the
# demo's small random-weight backbones (BERT and ViT, 4 layers, width 128, 32x32 images), on CPU:
# each method must beat the popularity baseline. `iisan demo` provides the data and backbones
# (once); then every method trains with the same config for the same number of epochs, each at
# its reference batch size and learning rates; `iisan report efficiency` tabulates the runs.
# Usage: experiments/accuracy_synthetic.sh [WORKDIR] (default runs/accuracy-synthetic)
#   EPOCHS=N (default 20) epochs per method; SMOKE=1: one epoch of 10 steps per method, a
#   minutes-long CPU smoke test of every method and of the efficiency report.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-runs/accuracy-synthetic}
epochs=${EPOCHS:-20}
extra=()
if [ "${SMOKE:-0}" = 1 ]; then epochs=1; extra=(--set train.max_steps_per_epoch=10); fi
[ -d "$work/runs" ] && ls "$work"/runs/demo-* >/dev/null 2>&1 || build/iisan demo --workdir "$work"
runs=()
for method in ${METHODS:-iisan iisan-uncached fft adapter lora bitfit}; do
  [ -f "$work/runs/$method/summary.json" ] || build/iisan train --config experiments/configs/demo.json \
    --set data.dir="$work/data" --set model.text_backbone="$work/backbones/text" \
    --set model.image_backbone="$work/backbones/image" --set cache.dir="$work/cache" \
    --set run_root="$work/runs" --set name=$method --set model.method=$method \
    --set train.batch_size=0 --set train.epochs="$epochs" "${extra[@]}"
  runs+=("$work/runs/$method")
done
build/iisan report efficiency "${runs[@]}" --out "$work/report"
