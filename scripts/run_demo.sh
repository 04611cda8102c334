#!/usr/bin/env bash
# The README's main job: set everything up, build the patched Caffe (CPU), and
# time the paper's 784-2048-2048-10 MLP with stock Dropout using `caffe time`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
export APPROX_DROPOUT_BUILD=$PWD/build/cpu
.venv/bin/python -m approx_dropout.caffe_time prototxt/mlp_bench_stock.prototxt \
  --iterations "${ITERATIONS:-10}"
