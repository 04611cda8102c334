#!/usr/bin/env bash
# Installs everything the project needs on a Debian 12 (bookworm) machine:
# the Debian build dependencies of Caffe (as root, only those missing) and a
# Python virtual environment at .venv with the pinned packages and the
# approx_dropout package. Safe to run again; it only adds what is missing.
# With --cuda it also installs NVIDIA's CUDA compiler, runtime, cuBLAS and
# cuRAND (CUDA_VERSION, default 13-0) from NVIDIA's Debian 12 repository,
# unless nvcc is already there (docker/Dockerfile.cuda uses this).
#   scripts/setup.sh [--cuda]
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=0
case ${1:-} in
  --cuda) cuda=1 ;;
  "") ;;
  *) echo "usage: scripts/setup.sh [--cuda]" >&2; exit 2 ;;
esac

APT_PACKAGES=(
  build-essential cmake ccache pkg-config python3-dev python3-venv ca-certificates
  libboost-system1.74-dev libboost-thread1.74-dev libboost-filesystem1.74-dev
  libboost-regex1.74-dev libboost-python1.74-dev
  libprotobuf-dev protobuf-compiler libgoogle-glog-dev libgflags-dev
  libhdf5-dev libopenblas-dev
  # data of the experiments: Fashion-MNIST (IDX files) and a text corpus
  dataset-fashion-mnist python3.11-doc
)

missing=()
# apt's own output (progress, dpkg's unpacking lines) goes to a log; the
# screen gets one line per step, and the log's end if a step fails.
# (In the checkout, not /tmp: root appends to it.)
apt_log=$PWD/build/setup-apt.log
apt_quietly() {
  mkdir -p build
  echo "setup: apt-get $1 (log: $apt_log)"
  DEBIAN_FRONTEND=noninteractive apt-get "$@" >>"$apt_log" 2>&1 || {
    tail -n 20 "$apt_log" >&2
    echo "setup: error: apt-get $1 failed (log: $apt_log)" >&2
    exit 1
  }
}

for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" \
    || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: error: need root to install ${missing[*]}; run:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  apt_quietly update
  apt_quietly install -y --no-install-recommends "${missing[@]}"
fi

if ((cuda)) && ! command -v nvcc >/dev/null && [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
  version=${CUDA_VERSION:-13-0}
  cuda_packages=("cuda-nvcc-$version" "cuda-cudart-dev-$version"
                 "libcublas-dev-$version" "libcurand-dev-$version")
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: error: need root to install ${cuda_packages[*]} from NVIDIA's repository" >&2
    exit 1
  fi
  echo "setup: installing NVIDIA's ${cuda_packages[*]}"
  # The keyring package installs the key apt trusts for NVIDIA's repository,
  # so it is pinned: sha256 of cuda-keyring_1.1-1_all.deb in NVIDIA's debian12
  # x86_64 repository, as pinned by Google's compute-gpu-installation CUDA
  # installer (NVIDIA_KEYRING_SHA256_SUMS, debian 12) and by other published
  # Debian 12 build scripts, which agree. If NVIDIA republishes the file, check
  # the new one against the SHA256 in NVIDIA's repository index (Packages).
  keyring_url=https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb
  keyring_sha256=e7f219eab6fe4819cdb5c15b98233dc3420302d9c00883219cd3d896857cf48d
  # A private file (mktemp: mode 0600, unpredictable name): as root, a fixed
  # /tmp path could be a link planted by another user.
  keyring=$(mktemp "${TMPDIR:-/tmp}/cuda-keyring.XXXXXX.deb")
  trap 'rm -f "$keyring"' EXIT
  python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
    "$keyring_url" "$keyring"
  got=$(sha256sum "$keyring" | cut -d' ' -f1)
  if [[ $got != "$keyring_sha256" ]]; then
    echo "setup: error: $keyring_url has sha256 $got, not the pinned $keyring_sha256;" \
         "refusing to install it (if NVIDIA republished the keyring, check the new" \
         "file and update keyring_sha256 in scripts/setup.sh)" >&2
    exit 1
  fi
  dpkg -i "$keyring" >/dev/null  # (its errors still reach stderr)
  rm -f "$keyring"
  trap - EXIT
  apt_quietly update
  apt_quietly install -y --no-install-recommends "${cuda_packages[@]}"
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# Reinstall only when the pins or the package metadata change.
stamp=.venv/.approx-dropout-requirements
want=$(cat python/requirements.txt python/pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  # pip's and the build backend's chatter (warnings about editable installs)
  # goes to a log, as apt's does; its end is shown if a step fails.
  mkdir -p build
  pip_log=$PWD/build/setup-pip.log
  echo "setup: installing the Python packages (log: $pip_log)"
  for args in "--upgrade pip" "-r python/requirements.txt" "--no-deps -e python/"; do
    # shellcheck disable=SC2086  # args holds several words on purpose
    .venv/bin/python -m pip install -q $args >>"$pip_log" 2>&1 || {
      tail -n 20 "$pip_log" >&2
      echo "setup: error: pip install $args failed (log: $pip_log)" >&2
      exit 1
    }
  done
  echo "$want" > "$stamp"
fi
echo "setup: ready ($(.venv/bin/python --version), Debian packages present)"
