#!/usr/bin/env bash
# Checks that a CUDA build really links libcaffe and the tools against the
# CUDA runtime, cuBLAS and cuRAND, and that its caffe tool starts (no GPU needed
# for --version).
set -euo pipefail
build=${1:?usage: check_cuda_link.sh BUILD_DIR}
for lib in libcudart libcublas libcurand; do
  ldd "$build/lib/libcaffe.so" | grep -q "$lib" \
    || { echo "check_cuda_link: error: $build/lib/libcaffe.so does not link $lib" >&2; exit 1; }
done
ldd "$build/tools/caffe" | grep -q libcaffe.so
"$build/tools/caffe" --version
echo "check_cuda_link: $build links cudart, cuBLAS and cuRAND"
