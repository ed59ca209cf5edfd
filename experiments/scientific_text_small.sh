#!/usr/bin/env bash
# Text-only IISAN on the real Amazon Scientific data with a small random-weight BERT
# (experiments/backbones/bert-small, bert-base-uncased's vocabulary). No pretrained weights
# exist on these machines, so this checks that the pipeline runs end to end on real data, not
# accuracy. Usage: experiments/scientific_text_small.sh [extra iisan train arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${IISAN_SHARED_DATA:-../shared/data}
work=${WORK:-runs/scientific-text-small}
[ -f "$shared/bert-base-uncased/vocab.txt" ] || { echo "needs $shared/bert-base-uncased/vocab.txt" >&2; exit 1; }
mkdir -p "$work/bert-small"
cp experiments/backbones/bert-small/config.json "$work/bert-small/config.json"
cp "$shared/bert-base-uncased/vocab.txt" "$work/bert-small/vocab.txt"
exec build/iisan train --config experiments/configs/scientific-text-small.json \
  --set data.dir="$shared/amazon-scientific" --set model.text_backbone="$work/bert-small" \
  --set cache.dir="$work/cache" --set run_root="$work/runs" "$@"
