#!/usr/bin/env bash
# Configures and builds the patched Caffe (libcaffe, tools, pycaffe, caffe_tests).
#   scripts/build.sh                  CPU-only build in build/cpu
#   scripts/build.sh --cuda [--cuda-arch 90]   CUDA build in build/cuda
# CAFFE_SOURCE_DIR=/path/to/caffe selects an upstream BVLC/caffe checkout
# (commit 9b89154) instead of the pinned sdist; the patch is applied to it.
# Compiler outputs are cached by ccache, which keys on the source, its headers
# and the flags, so a cache hit can never stand in for a changed file. The
# screen shows one progress line; the whole log is build/<variant>/build.log.
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
  # The precompiled header (CMakeLists.txt): ccache caches compiles that use
  # it only when told to ignore __TIME__-style macros and the header's
  # #defines; the .gch file itself is still hashed into every entry.
  export CCACHE_SLOPPINESS=${CCACHE_SLOPPINESS:+$CCACHE_SLOPPINESS,}pch_defines,time_macros
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

# The whole compiler output goes to build.log; the screen gets the latest
# "[ NN%] Building ..." line (rewritten in place on a terminal, every 30 s
# otherwise, as in CI logs).
log=$build_dir/build.log
tty=0; [[ -t 1 ]] && tty=1
show_progress() {
  local line shown=0 last=-30
  while IFS= read -r line; do
    [[ $line =~ ^\[\ *[0-9]+%\]|^\[[0-9]+/[0-9]+\] ]] || continue
    line=${line//$PWD\//}  # paths relative to the checkout
    if ((tty)); then
      printf '\r\033[K%s' "build.sh: ${line:0:$(( ${COLUMNS:-120} - 11 ))}"; shown=1
    elif ((SECONDS - last >= 30)); then
      echo "build.sh: $line"; last=$SECONDS
    fi
  done
  if ((shown)); then printf '\r\033[K'; fi
}
rc=0
cmake --build "$build_dir" -j "${JOBS:-$(nproc)}" "${targets[@]}" 2>&1 | tee "$log" | show_progress \
  || rc=${PIPESTATUS[0]}
if ((rc)); then
  echo "build.sh: error: the $variant build failed (exit $rc); its first errors, then the" \
       "end of $log:" >&2
  grep -E -m 10 -A 3 '(fatal )?error[: ]|Error [0-9]+' "$log" >&2 || true
  echo "..." >&2
  tail -n 25 "$log" >&2
  exit 1
fi
# Third-party code compiles without warnings (-w), so any here are ours.
warnings=$(grep -c 'warning:' "$log" || true)
if ((warnings)); then
  echo "build.sh: $warnings compiler warning(s) in this build (full log: $log):"
  grep 'warning:' "$log" | sort -u | head -n 20
fi
echo "build.sh: $variant build in $build_dir took $(( $(date +%s) - start )) s (log: $log)"
