#!/usr/bin/env bash
# The project's whole test suite (README "Test", and what CI runs):
#   1. setup (Debian packages, .venv) and the CPU-only build
#   2. caffe_tests, the gtest binary (our layers + the upstream tests we touch)
#   3. pytest for python/
#   4. when nvcc is present: the CUDA build for sm_90, compiled and linked,
#      packed into the GPU bundle, and the bundle unpacked and run in CPU mode
#      (CPU gtests, `caffe time` on CPU): GPU tests need a GPU machine
# Set APPROX_DROPOUT_SKIP_CUDA=1 to skip step 4.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
stamp() { echo "run_tests: $1 at +$(( $(date +%s) - t0 )) s"; }

scripts/setup.sh
scripts/build.sh
stamp "CPU build done"

(cd build/cpu && ctest --output-on-failure)
stamp "gtests done"

export APPROX_DROPOUT_BUILD=$PWD/build/cpu
.venv/bin/python -m pytest python/tests -q
stamp "pytest done"

if [[ ${APPROX_DROPOUT_SKIP_CUDA:-0} != 1 ]] && { command -v nvcc || [[ -x /usr/local/cuda/bin/nvcc ]]; } >/dev/null; then
  scripts/pack_gpu_bundle.sh --cuda-arch "${CUDA_ARCH:-90}"
  stamp "CUDA build and GPU bundle done"
  rm -rf build/gpu_bundle/cpu-run
  scripts/run_gpu_bundle.sh build/gpu_bundle/approx-dropout-gpu-bundle.tar.xz \
    build/gpu_bundle/cpu-run --cpu --only 'mlp_1024x*' 'lm_2x1500_p0.7' --repeats 1
  stamp "GPU bundle run in CPU mode done"
else
  echo "run_tests: no nvcc (or APPROX_DROPOUT_SKIP_CUDA=1): CUDA build skipped"
fi
stamp "all tests passed"
