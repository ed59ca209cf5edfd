#!/usr/bin/env bash
# Cache build throughput on one H200 (issue 6): the frozen backbones' one pass over the Amazon
# Scientific items (20,314), base-size BERT (title_max_tokens 30) and ViT-B/16 with random
# weights (no pretrained weights exist on these machines), one generated 224x224 JPEG per item.
# Builds twice, in float32 and in bfloat16 (cache.dtype), and keeps each build's stats JSON:
# items/s end to end, seconds in the two forwards alone (device synchronised), analytic forward
# FLOPs per item and the achieved TFLOP/s, to set against the card's dense bf16 matmul rate
# (H200 SXM: 989 TFLOP/s). Ends with one summary line per dtype (stats/summary.txt).
#
# Usage, from the repository root on the GPU machine, with iisan built against CUDA LibTorch:
#   IISAN=build-h200/iisan SHARED=../shared/data WORK=/tmp/cache-h200 experiments/cache_h200.sh
# Optional: BATCH (cache.batch_size, default 256), CHUNK (cache.chunk_items, default 2048),
# DTYPES (default "bfloat16 float32"), DEVICE (default cuda).
set -euo pipefail
iisan=${IISAN:-build/iisan}
shared=${SHARED:-../shared/data}
work=${WORK:-runs/cache-h200}
device=${DEVICE:-cuda}
batch=${BATCH:-256}
chunk=${CHUNK:-2048}
mkdir -p "$work/data" "$work/stats"
for f in users.tsv items.tsv; do [ -f "$work/data/$f" ] || cp "$shared/amazon-scientific/$f" "$work/data/$f"; done
"$iisan" data images "$work/data" --size 224

common=(--set data.dir="$work/data" --set model.text_backbone="$shared/bert-base-uncased"
        --set model.image_backbone="$shared/vit-base-patch16-224" --set train.device="$device"
        --set cache.batch_size="$batch" --set cache.chunk_items="$chunk")
for dtype in ${DTYPES:-bfloat16 float32}; do
  # A fresh cache folder per dtype, so that every run computes every item.
  rm -rf "$work/cache-$dtype"
  "$iisan" cache key "${common[@]}" --set cache.dir="$work/cache-$dtype" --set cache.dtype="$dtype"
  "$iisan" cache build "${common[@]}" --set cache.dir="$work/cache-$dtype" --set cache.dtype="$dtype" \
    --stats-out "$work/stats/$dtype.json" | tee "$work/stats/$dtype.txt"
  "$iisan" cache verify "${common[@]}" --set cache.dir="$work/cache-$dtype" --set cache.dtype="$dtype" \
    --rows 64 | tee -a "$work/stats/$dtype.txt"
done

# One line per dtype: items/s end to end, forward seconds and items/s, GFLOP/item, TFLOP/s.
for dtype in ${DTYPES:-bfloat16 float32}; do
  echo "$dtype: $(grep -h '^built ' "$work/stats/$dtype.txt")"
done | tee "$work/stats/summary.txt"
