#!/usr/bin/env bash
# The device-side command behind experiments/results/cache-h200.md: build iisan, run
# experiments/cache_h200.sh with RUNS, copy the stats to $OUT.
set -e
source tools/h200_build.sh -DIISAN_BUILD_TESTS=OFF -DIISAN_ENABLE_NCCL=OFF -- iisan
test -x build-h200/iisan
IISAN=build-h200/iisan SHARED=.carry/shared WORK=/tmp/ch experiments/cache_h200.sh > /tmp/ch.log 2>&1 || { tail -40 /tmp/ch.log; exit 1; }
grep -E "max abs|verif" /tmp/ch.log | head -20
cat /tmp/ch/stats/summary.txt
mkdir -p "$OUT/stats"; cp /tmp/ch/stats/* "$OUT/stats/"; cp /tmp/ch.log "$OUT/"
