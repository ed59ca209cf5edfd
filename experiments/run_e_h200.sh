#!/usr/bin/env bash
# Run E of issue 17 on one H200: every row of the single-GPU table in one go.
#  1. the GPU tests of the device-resident cache tables and evaluation (cache and train test
#     binaries, filtered to what needs CUDA or changed with it);
#  2. experiments/speed_h200.sh with PROFILE=1: cache builds (default bf16, float32), cached
#     IISAN at the defaults and in full precision, seeds 1-3 x both, kernel profiles;
#  3. experiments/efficiency_h200.sh for the live-backbone methods (uncached IISAN, FFT, Adapter,
#     LoRA, BitFit; STEPS steps each), reading the same data and cache;
#     then 20 profiled steps of FFT and of uncached IISAN (profiles/<method>/summary.txt);
#  4. backbone forwards: transformers (tools/h200_backbone_reference.py) against ours
#     (iisan_backbone_parity) in bf16, both with per-kernel profiles summed by kind of work
#     (tools/kernel_categories.py), and the card's bf16 matmul rate (tools/bf16_matmul_rate.py);
#  5. the cache build, default settings, from the backbone weights transformers saved in 4 (what
#     a user with weights runs: the set-up loads them instead of initialising at random).
# Everything lands in $OUT/run-e.tgz. Build first (tests on, NCCL off):
#   source tools/h200_build.sh -DIISAN_ENABLE_NCCL=OFF -- iisan iisan_backbone_parity \
#     iisan_cache_tests iisan_train_tests
#   SHARED=.carry/shared OUT=$OUT bash experiments/run_e_h200.sh
set -uo pipefail
shared=${SHARED:-.carry/shared}
build=${BUILD:-build-h200}
out=${OUT:?set OUT}
work=${WORK:-/tmp/run-e}
results=$work/results
mkdir -p "$results"
log() { echo "[$(date +%T)] $*"; }

log "GPU tests"
# One process per store test, output line-buffered: a crash names its test.
for t in $("$build/tests/iisan_cache_tests" --gtest_list_tests --gtest_filter='StoreTest.*' | grep '^  '); do
  stdbuf -oL timeout 120 "$build/tests/iisan_cache_tests" --gtest_filter="StoreTest.$t" --gtest_brief=1 \
    >> "$results/gpu-tests.txt" 2>&1; echo "StoreTest.$t rc=$?" >> "$results/gpu-tests.txt"
done
stdbuf -oL timeout 300 "$build/tests/iisan_train_tests" --gtest_filter='*Evaluat*:*Rank*:*Cuda*:*Graph*:*Trainer*' \
  --gtest_brief=1 >> "$results/gpu-tests.txt" 2>&1; echo "train tests rc=$?" >> "$results/gpu-tests.txt"
grep -E "PASSED|FAILED|SKIPPED|rc=|Failure" -A3 "$results/gpu-tests.txt" | head -40

log "speed (cached IISAN)"
IISAN=$build/iisan SHARED=$shared WORK=$work/speed OUT=$results PROFILE=1 bash experiments/speed_h200.sh \
  > "$results/speed.log" 2>&1
tail -5 "$results/speed.log"

log "live-backbone methods"
mkdir -p "$work/eff"
ln -sfn "$work/speed/data" "$work/eff/data"
ln -sfn "$work/speed/cache" "$work/eff/cache"
IISAN=$build/iisan SHARED=$shared WORK=$work/eff METHODS="${METHODS:-iisan-uncached fft adapter lora bitfit}" \
  bash experiments/efficiency_h200.sh > "$results/efficiency.log" 2>&1
tail -12 "$results/efficiency.log"
mkdir -p "$results/efficiency"
for run in "$work"/eff/runs/*; do
  mkdir -p "$results/efficiency/runs/$(basename "$run")"
  for f in summary.json config.json metrics.jsonl; do
    [ -f "$run/$f" ] && cp "$run/$f" "$results/efficiency/runs/$(basename "$run")/"
  done
done
[ -d "$work/eff/report" ] && cp -r "$work/eff/report" "$results/efficiency/"

log "live-backbone step profiles"
# 20 profiled steps from step 11 of a 40-step epoch, then the evaluation pass: where FFT's and
# uncached IISAN's steps go (issue 17 asks each gap to be explained by the profile).
for method in ${PROFILE_METHODS:-fft iisan-uncached}; do
  "$build/iisan" train --set data.dir="$work/speed/data" --set model.text_backbone="$shared/bert-base-uncased" \
    --set model.image_backbone="$shared/vit-base-patch16-224" --set train.device=cuda \
    --set cache.dir="$work/speed/cache" --set run_root="$work/profiles" --set model.method=$method \
    --set train.epochs=1 --set train.max_steps_per_epoch=40 --set train.profile_steps=20 \
    --set name=$method-profile > "$results/profile-$method.log" 2>&1 || echo "FAILED: profile of $method"
  [ -d "$work/profiles/$method-profile/profile" ] && mkdir -p "$results/profiles/$method" \
    && cp "$work/profiles/$method-profile/profile/"{summary.txt,train_steps.json} "$results/profiles/$method/"
done

log "backbone forwards"
# An absolute path: transformers 5 took the relative .carry/shared/... for a hub repo id.
python3 tools/h200_backbone_reference.py --configs "$(realpath "$shared")" --out "$work/h200" \
  --profile-dir "$results/backbone-profiles/transformers" > "$results/backbone-transformers.json" \
  2> "$results/backbone-transformers.log"
"$build/experiments/bench/iisan_backbone_parity" --dir "$work/h200" --profile-dir "$results/backbone-profiles/ours" \
  > "$results/backbone-ours.json" 2> "$results/backbone-ours.log"
python3 tools/bf16_matmul_rate.py --json "$results/bf16-matmul-rate.json" > /dev/null 2>&1
tail -c 600 "$results/backbone-ours.json"; echo
for phase in bert_forward vit_forward; do
  python3 tools/kernel_categories.py "$results/backbone-profiles/ours/$phase.json" \
    "$results/backbone-profiles/transformers/$phase.json"
done > "$results/backbone-categories.txt" 2>&1
python3 tools/kernel_categories.py "$work"/speed/runs/profile-*/profile/*.json "$results"/profiles/*/*.json \
  > "$results/step-categories.txt" 2>&1
cat "$results/backbone-categories.txt"

log "cache build from saved weights"
start=$(date +%s%N)
"$build/iisan" cache build --set data.dir="$work/speed/data" --set model.text_backbone="$work/h200/bert-base" \
  --set model.image_backbone="$work/h200/vit-base" --set train.device=cuda --set cache.dir="$work/wcache" \
  > "$results/cache-build-weights.log" 2>&1 || echo "FAILED: cache build from saved weights"
echo "cache build, default settings, saved weights: $(( ($(date +%s%N) - start) / 1000000 )) ms end to end" \
  | tee "$results/cache-build-weights.txt"
grep -v '^[IW][0-9]' "$results/cache-build-weights.log" | tail -3

tar czf "$out/run-e.tgz" -C "$results" . && log "packed $out/run-e.tgz"
