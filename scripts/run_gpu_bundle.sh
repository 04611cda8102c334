#!/usr/bin/env bash
# On the GPU machine (no package registries needed; python3 and a CUDA 13
# runtime are): checks the archive's sha256, unpacks it to a temporary
# folder, runs the new layers' GPU gtests and the stock vs RDP vs TDP
# benchmarks (paper Table I MLPs, the 2 x 1500 LSTM LM), and writes
# results.json, results.md, gtest.xml and run.log to OUT. With --cpu it runs
# the CPU tests and `caffe time` in CPU mode instead (how the path is tested
# on machines without a GPU). Further options go to the bundle's run_bundle.py
# (--only GLOB..., --repeats, --iterations, --lm-iterations, --budget).
#   scripts/run_gpu_bundle.sh ARCHIVE.tar.xz OUT [--cpu] [options]
set -euo pipefail
if (($# < 2)) || [[ $1 == -h || $1 == --help ]]; then
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  (($# >= 1)) && [[ $1 == -h || $1 == --help ]] && exit 0
  exit 2
fi
archive=$(realpath "$1") out=$2
shift 2
[[ -f $archive ]] || { echo "run_gpu_bundle: error: no archive at $archive" >&2; exit 1; }
[[ -f $archive.sha256 ]] \
  || { echo "run_gpu_bundle: error: no $archive.sha256 beside the archive" >&2; exit 1; }
# Hash the archive we were given and compare with the digest in the .sha256
# file. (`sha256sum -c` would hash the file NAMED inside it instead, so a
# renamed, tampered archive beside an intact one would pass.) The name inside
# is ignored: the digest is checked against the very file that is unpacked.
read -r want _ < "$archive.sha256" || true
[[ ${want:-} =~ ^[0-9a-f]{64}$ ]] \
  || { echo "run_gpu_bundle: error: $archive.sha256 holds no sha256 digest" >&2; exit 1; }
got=$(sha256sum "$archive" | cut -d' ' -f1)
[[ $got == "$want" ]] \
  || { echo "run_gpu_bundle: error: $archive does not match its sha256 ($got, expected $want)" >&2
       exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/approx-dropout-bundle.XXXXXX")
trap 'rm -rf "$work"' EXIT
tar -C "$work" -xJf "$archive"
bundle=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n 1)
mkdir -p "$out"
python3 "$bundle/run_bundle.py" --out "$out" "$@"
