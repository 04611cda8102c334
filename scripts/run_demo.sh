#!/usr/bin/env bash
# The README's main job: set everything up, build the patched Caffe (CPU), and
# time the paper's 784-2048-2048-10 MLP (batch 128, dropout 0.7) with stock
# Dropout and with ApproxDropoutInnerProduct (RDP and TDP) side by side with
# `caffe time`, printing the speedups.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
export APPROX_DROPOUT_BUILD=$PWD/build/cpu
.venv/bin/python scripts/bench_mlp.py --hidden 2048 --rate 0.7 \
  --repeats "${REPEATS:-3}" --out build/demo
