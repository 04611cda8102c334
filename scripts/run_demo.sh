#!/usr/bin/env bash
# The README's main job: set everything up, build the patched Caffe (CPU),
# convert Fashion-MNIST once, and train the paper's 784-2048-2048-10 MLP
# (batch 128, dropout 0.5) with stock Dropout and with RDP
# (ApproxDropoutInnerProduct) for the same short budget, printing time per
# iteration, the speedup and test accuracy, and saving a plot.
# ITERATIONS (default 2000 per net) sets the budget.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
export APPROX_DROPOUT_BUILD=$PWD/build/cpu
rm -rf build/demo/runs  # measure afresh every time (the runner resumes otherwise)
.venv/bin/python scripts/exp_mlp.py demo --iterations "${ITERATIONS:-2000}" --out build/demo
