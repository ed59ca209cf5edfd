#!/usr/bin/env bash
# Data-parallel scaling harness (issues 5 and 7): one fixed configuration at 1, 2, 4, … ranks,
# one table. Amazon Scientific users and items, base-size BERT and ViT with random weights, one
# generated 224x224 JPEG per item (as experiments/efficiency_h200.sh). For each method (cached
# IISAN and FFT by default) and each mode:
#   strong  the reference's global batch (64 for IISAN, 32 for FFT) split over the ranks
#   weak    the reference's batch per rank (global batch = ranks x reference)
# Every run trains one epoch (STEPS_<METHOD> steps of it, 0 = all) with eager steps, because
# data-parallel steps are not captured as CUDA graphs; one more run per method shows one rank
# with its CUDA graph (the single-device default) for comparison. N > 1 ranks start with
# `iisan launch --nproc N` (one GPU a rank, NCCL on CUDA). The table (experiments/scaling_table.py)
# gives steps/s and samples/s from the steady seconds per step, the scaling efficiency
# (samples/s at N ranks / (N x samples/s of one rank with eager steps)), the gradient all-reduce
# milliseconds and bytes per step, and rank 0's peak memory.
#
# Usage, from the repository root on the GPU machine, with iisan built against CUDA LibTorch:
#   IISAN=build-h200/iisan SHARED=../shared/data WORK=/tmp/scaling RANKS="1 2" experiments/scaling.sh
# Keep NCCL_NVLS_ENABLE=0 on multi-GPU machines (set here unless already set).
# Other settings: DEVICE (cuda|cpu), LAUNCHER (launch|mpirun; mpirun runs as
# `mpirun --oversubscribe -np N`), DATA_DIR (users.tsv + items.tsv; default: a copy of
# Scientific), TEXT_BACKBONE / IMAGE_BACKBONE, IMAGE_SIZE (224), EXTRA (more --set options).
# CPU example with the demo's small backbones, 1-8 ranks under mpirun:
#   iisan demo --workdir /tmp/demo && DEVICE=cpu LAUNCHER=mpirun RANKS="1 2 4 8" DATA_DIR=/tmp/demo/data \
#   TEXT_BACKBONE=/tmp/demo/backbones/text IMAGE_BACKBONE=/tmp/demo/backbones/image IMAGE_SIZE=32 \
#   STEPS_IISAN=20 STEPS_FFT=8 WORK=/tmp/scaling-cpu experiments/scaling.sh
set -euo pipefail
iisan=${IISAN:-build/iisan}
shared=${SHARED:-../shared/data}
work=${WORK:-runs/scaling}
device=${DEVICE:-cuda}
ranks=${RANKS:-1 2}
methods=${METHODS:-iisan fft}
modes=${MODES:-strong weak}
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
launcher=${LAUNCHER:-launch}
data=${DATA_DIR:-$work/data}
if [ -z "${DATA_DIR:-}" ]; then
  mkdir -p "$data"
  for f in users.tsv items.tsv; do [ -f "$data/$f" ] || cp "$shared/amazon-scientific/$f" "$data/$f"; done
fi
"$iisan" data images "$data" --size "${IMAGE_SIZE:-224}"
read -r -a extra <<< "${EXTRA:-}"

common=(--set data.dir="$data" --set model.text_backbone="${TEXT_BACKBONE:-$shared/bert-base-uncased}"
        --set model.image_backbone="${IMAGE_BACKBONE:-$shared/vit-base-patch16-224}" --set train.device="$device"
        --set cache.dir="$work/cache" --set run_root="$work/runs" --set train.epochs=1 --set train.patience=100
        "${extra[@]}")
"$iisan" cache build "${common[@]}"
runs=()
for method in $methods; do
  case $method in iisan) base=64; steps=${STEPS_IISAN:-0} ;; *) base=32; steps=${STEPS_FFT:-60} ;; esac
  args=("${common[@]}" --set model.method="$method" --set train.max_steps_per_epoch="$steps")
  name=$method-graph-1
  [ -f "$work/runs/$name/summary.json" ] ||
    "$iisan" train "${args[@]}" --set train.batch_size=$base --set name=$name || echo "FAILED: $name" >&2
  runs+=("$work/runs/$name")
  for mode in $modes; do
    for n in $ranks; do
      global=$base; [ "$mode" = weak ] && global=$((base * n))
      # One rank is the same run in both modes.
      name=$method-$mode-$n; [ "$n" = 1 ] && name=$method-strong-1
      [[ " ${runs[*]} " == *" $work/runs/$name "* ]] && continue
      run=("${args[@]}" --set train.batch_size=$global --set train.cuda_graph=false --set name=$name)
      if [ ! -f "$work/runs/$name/summary.json" ]; then
        if [ "$n" = 1 ]; then "$iisan" train "${run[@]}" || echo "FAILED: $name" >&2
        elif [ "$launcher" = mpirun ]; then
          mpirun --oversubscribe --allow-run-as-root -np "$n" "$iisan" train "${run[@]}" || echo "FAILED: $name" >&2
        else "$iisan" launch --nproc "$n" -- train "${run[@]}" || echo "FAILED: $name" >&2; fi
      fi
      runs+=("$work/runs/$name")
    done
  done
done
python3 "$(dirname "$0")/scaling_table.py" "${runs[@]}" | tee "$work/scaling.md"
