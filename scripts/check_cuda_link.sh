#!/usr/bin/env bash
# Checks that a CUDA build really links libcaffe and the tools against the
# CUDA runtime, cuBLAS and cuRAND, and that its caffe tool starts (no GPU needed
# for --version).
set -euo pipefail
build=${1:?usage: check_cuda_link.sh BUILD_DIR}
# Capture ldd's output once: `ldd | grep -q` under pipefail fails at random
# when grep exits before ldd has finished writing (SIGPIPE).
libcaffe_deps=$(ldd "$build/lib/libcaffe.so")
if grep -q "not found" <<<"$libcaffe_deps"; then
  echo "check_cuda_link: error: unresolved libraries of $build/lib/libcaffe.so:" >&2
  grep "not found" <<<"$libcaffe_deps" >&2
  exit 1
fi
for lib in libcudart libcublas libcurand; do
  grep -q "$lib" <<<"$libcaffe_deps" \
    || { echo "check_cuda_link: error: $build/lib/libcaffe.so does not link $lib" >&2; exit 1; }
done
tool_deps=$(ldd "$build/tools/caffe")
grep -q libcaffe.so <<<"$tool_deps" \
  || { echo "check_cuda_link: error: $build/tools/caffe does not link libcaffe.so" >&2; exit 1; }
"$build/tools/caffe" --version
echo "check_cuda_link: $build links cudart, cuBLAS and cuRAND"
