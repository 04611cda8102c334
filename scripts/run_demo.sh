#!/usr/bin/env bash
# The README's main job: set everything up, build the patched Caffe (CPU),
# convert Fashion-MNIST once, and train the paper's 784-2048-2048-10 MLP
# (batch 128, dropout 0.5) with stock Dropout and with RDP
# (ApproxDropoutInnerProduct) for the same short budget, printing time per
# iteration, the speedup and test accuracy, and saving a plot.
# ITERATIONS (default 500 per net) sets the budget; --gpu ID trains on a GPU
# with the CUDA build (for sm_$CUDA_ARCH, default 90).
#   scripts/run_demo.sh [--gpu ID]
set -euo pipefail
cd "$(dirname "$0")/.."
build_args=() device_args=() build=build/cpu
if (($#)); then
  [[ $1 == --gpu && $# == 2 ]] || { echo "usage: scripts/run_demo.sh [--gpu ID]" >&2; exit 2; }
  build_args=(--cuda --cuda-arch "${CUDA_ARCH:-90}") device_args=(--gpu "$2") build=build/cuda
fi
scripts/setup.sh
# Only what the demo runs: libcaffe, the caffe tool and pycaffe (the tests,
# Caffe's own suite among them, are scripts/run_tests.sh's).
scripts/build.sh "${build_args[@]}" --target tool_caffe --target pycaffe
export APPROX_DROPOUT_BUILD=$PWD/$build
rm -rf build/demo/runs  # measure afresh every time (the runner resumes otherwise)
.venv/bin/python scripts/experiments/exp_mlp.py demo --iterations "${ITERATIONS:-500}" --out build/demo \
  "${device_args[@]}"
