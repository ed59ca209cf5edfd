#!/usr/bin/env bash
# The paper's efficiency comparison (IISAN.md §7.1) on one GPU: every method on the Amazon
# Scientific users and items (12,076 / 20,314), base-size BERT and ViT with random weights (no
# pretrained weights exist on these machines), one generated 224x224 JPEG per item, the
# reference's batch sizes (64 for IISAN, 32 for the baselines). Cached IISAN runs full epochs;
# the live-backbone methods run STEPS steps (default 150) of one epoch and their epoch time is
# extrapolated from the steady-state seconds per step (summary.json says so); a method whose
# CUDA-graph steps fail is measured again with eager steps, named <method>-eager. Ends with `iisan report
# efficiency` over the six runs.
#
# Usage, from the repository root on the GPU machine, with iisan built against CUDA LibTorch:
#   IISAN=build-h200/iisan SHARED=../shared/data WORK=/tmp/efficiency experiments/efficiency_h200.sh
set -euo pipefail
iisan=${IISAN:-build/iisan}
shared=${SHARED:-../shared/data}
work=${WORK:-runs/efficiency}
steps=${STEPS:-150}
device=${DEVICE:-cuda}
mkdir -p "$work/data"
for f in users.tsv items.tsv; do [ -f "$work/data/$f" ] || cp "$shared/amazon-scientific/$f" "$work/data/$f"; done
"$iisan" data images "$work/data" --size 224

common=(--set data.dir="$work/data" --set model.text_backbone="$shared/bert-base-uncased"
        --set model.image_backbone="$shared/vit-base-patch16-224" --set train.device="$device"
        --set cache.dir="$work/cache" --set run_root="$work/runs")
start=$(date +%s%N)
"$iisan" cache build "${common[@]}"
echo "cache build: $(( ($(date +%s%N) - start) / 1000000 )) ms (tokenise, decode, both forwards, write)" \
  | tee "$work/cache-build.txt"
# A method that fails does not stop the others; the report covers the runs that finished.
done_runs=()
if "$iisan" train "${common[@]}" --set model.method=iisan --set train.epochs=3 --set train.patience=100 \
    --set name=iisan; then
  done_runs+=("$work/runs/iisan")
elif "$iisan" train "${common[@]}" --set model.method=iisan --set train.epochs=3 --set train.patience=100 \
    --set train.cuda_graph=false --set name=iisan-eager; then
  echo "FAILED: iisan with a CUDA graph; measured without one" >&2
  done_runs+=("$work/runs/iisan-eager")
fi
for method in ${METHODS:-iisan-uncached fft adapter lora bitfit}; do
  live=("${common[@]}" --set model.method=$method --set train.epochs=1 --set train.max_steps_per_epoch="$steps")
  if "$iisan" train "${live[@]}" --set name=$method; then
    done_runs+=("$work/runs/$method")
  elif "$iisan" train "${live[@]}" --set train.cuda_graph=false --set name=$method-eager; then
    echo "FAILED: $method with CUDA graphs; measured without them" >&2
    done_runs+=("$work/runs/$method-eager")
  else
    echo "FAILED: $method" >&2
  fi
done
"$iisan" report efficiency "${done_runs[@]}" --out "$work/report"
