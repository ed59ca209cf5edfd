#!/usr/bin/env bash
# Accuracy sanity of every method (IISAN.md §5) on the built-in synthetic dataset with the
# demo's small random-weight backbones (BERT and ViT, 4 layers, width 128, 32x32 images), on CPU:
# each method must beat the popularity baseline. Runs `iisan demo` (cached IISAN) first, then
# the other methods with the same data, backbones and config, each at its reference batch size
# and learning rates, then `iisan report efficiency` over all runs.
# Usage: experiments/accuracy_synthetic.sh [WORKDIR] (default runs/accuracy-synthetic)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-runs/accuracy-synthetic}
epochs=${EPOCHS:-20}
[ -d "$work/runs" ] && ls "$work"/runs/demo-* >/dev/null 2>&1 || build/iisan demo --workdir "$work"
demo_run=$(ls -d "$work"/runs/demo-* | head -1)
runs=("$demo_run")
for method in ${METHODS:-iisan-uncached fft adapter lora bitfit}; do
  [ -f "$work/runs/$method/summary.json" ] || build/iisan train --config experiments/configs/demo.json \
    --set data.dir="$work/data" --set model.text_backbone="$work/backbones/text" \
    --set model.image_backbone="$work/backbones/image" --set cache.dir="$work/cache" \
    --set run_root="$work/runs" --set name=$method --set model.method=$method \
    --set train.batch_size=0 --set train.epochs="$epochs"
  runs+=("$work/runs/$method")
done
build/iisan report efficiency "${runs[@]}" --out "$work/report"
