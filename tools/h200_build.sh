#!/usr/bin/env bash
# Builds iisan on the GPU machine (Ubuntu 24.04, CUDA LibTorch from the python3 torch) from the
# Debian packages carried in .debs/ (glog, gflags, libunwind, CLI11, stb, nlohmann-json), which
# that machine lacks. Source it, then run the binaries with the LD_LIBRARY_PATH it exports:
#   source tools/h200_build.sh [cmake options...] -- [targets...]
# e.g.  source tools/h200_build.sh -DIISAN_BUILD_TESTS=OFF -- iisan
# Build folder: build-h200. Prefix with the unpacked packages: /tmp/p.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} NCCL_NVLS_ENABLE=0
H200_PREFIX=/tmp/p
h200_options=() h200_targets=() h200_seen_dashes=0
for arg in "$@"; do
  if [ "$arg" = "--" ]; then h200_seen_dashes=1; elif [ $h200_seen_dashes = 1 ]; then h200_targets+=("$arg"); else h200_options+=("$arg"); fi
done
for f in .debs/*.deb; do dpkg -x "$f" "$H200_PREFIX"; done
h200_torch=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
cmake -S . -B build-h200 -G Ninja -DCMAKE_BUILD_TYPE=Release "${h200_options[@]}" \
  -DCMAKE_PREFIX_PATH="$h200_torch;$H200_PREFIX/usr" -DCMAKE_MODULE_PATH=$H200_PREFIX/usr/share/glog/cmake \
  > /tmp/h200-configure.log 2>&1 || { tail -30 /tmp/h200-configure.log; return 1 2>/dev/null || exit 1; }
# -k 0: the test binaries' gtest_discover step fails without the library path, the binaries are fine.
if ! cmake --build build-h200 -j16 --target "${h200_targets[@]:-iisan}" -- -k 0 > /tmp/h200-build.log 2>&1; then
  grep -E "error:|FAILED" -A3 /tmp/h200-build.log | grep -v gtest_discover | head -30
fi
export LD_LIBRARY_PATH=$H200_PREFIX/usr/lib/x86_64-linux-gnu
