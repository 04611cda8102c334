#!/usr/bin/env bash
# Configures and builds the patched Caffe (libcaffe, tools, pycaffe, caffe_tests).
#   scripts/build.sh                  CPU-only build in build/cpu
#   scripts/build.sh --cuda [--cuda-arch 90]   CUDA build in build/cuda
# CAFFE_SOURCE_DIR=/path/to/caffe selects an upstream BVLC/caffe checkout
# (commit 9b89154) instead of the pinned sdist; the patch is applied to it.
# Compiler outputs are cached by ccache, which keys on the source, its headers
# and the flags, so a cache hit can never stand in for a changed file.
set -euo pipefail
cd "$(dirname "$0")/.."

variant=cpu cuda_arch="75;80;86;89;90" targets=()
while (($#)); do
  case $1 in
    --cuda) variant=cuda ;;
    --cuda-arch) cuda_arch=$2; shift ;;
    --target) targets+=(--target "$2"); shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: error: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

[[ -x .venv/bin/python ]] || { echo "build.sh: error: run scripts/setup.sh first" >&2; exit 1; }
build_dir=${BUILD_DIR:-build/$variant}
args=(-S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release
      -DPython3_EXECUTABLE="$PWD/.venv/bin/python"
      -DCAFFE_SOURCE_DIR="${CAFFE_SOURCE_DIR:-}")
if command -v ccache >/dev/null; then
  args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  # Paths below the checkout are hashed relative to it, so that clones in other
  # folders (CI) share cache entries; contents and flags are still hashed.
  export CCACHE_BASEDIR=$PWD
fi
if [[ $variant == cuda ]]; then
  command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH
  args+=(-DUSE_CUDA=ON -DCUDA_ARCH="$cuda_arch" -DCMAKE_CUDA_COMPILER="$(command -v nvcc)")
fi
start=$(date +%s)
mkdir -p "$build_dir"
cmake "${args[@]}" >"$build_dir/configure.log" 2>&1 || {
  cat "$build_dir/configure.log" >&2
  echo "build.sh: error: configure failed (log above)" >&2; exit 1; }
grep -E '^caffe_patch:|Caffe source' "$build_dir/configure.log" | grep -v 'already applied' || true
cmake --build "$build_dir" -j "${JOBS:-$(nproc)}" "${targets[@]}"
echo "build.sh: $variant build in $build_dir took $(( $(date +%s) - start )) s"
