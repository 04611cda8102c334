#!/usr/bin/env bash
# Builds the CUDA variant of the patched Caffe for one architecture (default
# sm_90, Hopper) and packs it, with every shared library a bare CUDA machine
# lacks, the approx_dropout package and the benchmark nets, into one archive
# (limit 60 MiB): build/gpu_bundle/approx-dropout-gpu-bundle.tar.xz and its
# .sha256. Run it on a CPU machine after scripts/setup.sh; carry the archive
# to the GPU machine and run scripts/run_gpu_bundle.sh there.
#   scripts/pack_gpu_bundle.sh [--cuda-arch 90] [--out build/gpu_bundle]
set -euo pipefail
cd "$(dirname "$0")/.."
arch=90 out=build/gpu_bundle
while (($#)); do
  case $1 in
    --cuda-arch) arch=$2; shift ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "pack_gpu_bundle: error: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
scripts/build.sh --cuda --cuda-arch "$arch"
scripts/check_cuda_link.sh build/cuda
.venv/bin/python -c 'import sys; from approx_dropout.bundle.pack import main; sys.exit(main())' \
  --build build/cuda --out "$out"
