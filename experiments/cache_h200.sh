#!/usr/bin/env bash
# Cache build throughput on one H200 (issue 6): the frozen backbones' one pass over the Amazon
# Scientific items (20,314), base-size BERT (title_max_tokens 30) and ViT-B/16 with random
# weights (no pretrained weights exist on these machines), one generated 224x224 JPEG per item.
# Builds once per entry of RUNS and keeps each build's stats JSON: items/s end to end, seconds
# in the two forwards alone (device synchronised), analytic forward FLOPs per item and the
# achieved TFLOP/s (to set against the card's measured dense bf16 matmul rate), and where the
# rest of the time went (host preparation beside the forwards, the device waiting for the host,
# chunk writes, assembly). Ends with one summary line per run (stats/summary.txt).
#
# Usage, from the repository root on the GPU machine, with iisan built against CUDA LibTorch:
#   IISAN=build-h200/iisan SHARED=../shared/data WORK=/tmp/cache-h200 experiments/cache_h200.sh
# RUNS: space-separated DTYPE:BATCH entries, default "bfloat16:512 bfloat16:256 float32:512".
# Optional: CHUNK (cache.chunk_items, default 2048), THREADS (cache.threads, default 0 = one per
# core), DEVICE (default cuda), VERIFY_ROWS (default 64; 0 skips `iisan cache verify`).
set -euo pipefail
iisan=${IISAN:-build/iisan}
shared=${SHARED:-../shared/data}
work=${WORK:-runs/cache-h200}
device=${DEVICE:-cuda}
chunk=${CHUNK:-2048}
threads=${THREADS:-0}
verify_rows=${VERIFY_ROWS:-64}
runs=${RUNS:-bfloat16:512 bfloat16:256 float32:512}
mkdir -p "$work/data" "$work/stats"
for f in users.tsv items.tsv; do [ -f "$work/data/$f" ] || cp "$shared/amazon-scientific/$f" "$work/data/$f"; done
"$iisan" data images "$work/data" --size 224

for run in $runs; do
  IFS=: read -r dtype batch <<<"$run"
  tag="$dtype-b$batch"
  args=(--set data.dir="$work/data" --set model.text_backbone="$shared/bert-base-uncased"
        --set model.image_backbone="$shared/vit-base-patch16-224" --set train.device="$device"
        --set cache.batch_size="$batch" --set cache.chunk_items="$chunk" --set cache.threads="$threads"
        --set cache.dir="$work/cache-$tag" --set cache.dtype="$dtype")
  # A fresh cache folder per run, so that every run computes every item.
  rm -rf "$work/cache-$tag"
  "$iisan" cache key "${args[@]}"
  "$iisan" cache build "${args[@]}" --stats-out "$work/stats/$tag.json" | tee "$work/stats/$tag.txt"
  if [ "$verify_rows" -gt 0 ]; then
    "$iisan" cache verify "${args[@]}" --rows "$verify_rows" | tee -a "$work/stats/$tag.txt"
  fi
  rm -rf "$work/cache-$tag"
done

# One block per run: items/s end to end, forwards, TFLOP/s, then where the time went.
for run in $runs; do
  IFS=: read -r dtype batch <<<"$run"
  tag="$dtype-b$batch"
  echo "$tag: $(grep -h -A1 '^built ' "$work/stats/$tag.txt" | tr '\n' ' ')"
done | tee "$work/stats/summary.txt"
