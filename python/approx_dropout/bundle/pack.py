"""Pack a Caffe build into one archive for a GPU machine without package access.

The archive keeps the build folder's layout (tools/caffe, lib/libcaffe.so,
test/caffe_tests, python/caffe), so the rest of this package can treat an
unpacked bundle as a build folder, and adds:

- lib/: every shared library those files need, found with ldd, except the
  ones any CUDA machine has (HOST_LIBRARIES: glibc, libstdc++, the CUDA
  driver and runtime libraries, libpython). A check after copying reads each
  ELF file's NEEDED entries (readelf) and fails if one is neither in lib/
  nor a host library.
- python/approx_dropout/: this package (the runner, approx_dropout.bundle.run,
  is part of it).
- run_bundle.py: the bundle's entry (RUNNER_SCRIPT), standard library only:
  `python3 run_bundle.py --out OUT [--cpu]` runs bundle.run on its own folder.
- nets/: the benchmark nets (paper Table I MLPs, the 2 x 1500 LSTM LM),
  stock and approximate methods (MLP_METHODS, LM_METHODS: named in
  approx_dropout.methods), DummyData-fed.
- MANIFEST.json: build facts, the host libraries expected, and the sha256 and
  size of every file; the archive's own sha256 goes to ARCHIVE.sha256.

scripts/pack_gpu_bundle.sh builds build/cuda and calls main (pack's command
line: --build build/cuda --out build/gpu_bundle).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..prototxt import nets
from .run import sha256

# Libraries a machine with a CUDA 13 runtime has: the C library family,
# the C++ runtime, the driver and the CUDA runtime libraries (cuBLAS alone is
# ~600 MB, far over the size limit), and libpython (pycaffe is for a Python
# 3.11 host; caffe and caffe_tests do not need it).
HOST_LIBRARIES = re.compile(
    r"^(linux-vdso|ld-linux-x86-64|libc|libm|libpthread|libdl|librt|libresolv|libutil|libanl"
    r"|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libcurand"
    r"|libpython3[.0-9]*)\.so")
ELF_FILES = ("lib/libcaffe.so", "tools/caffe", "test/caffe_tests", "python/caffe/_caffe.so")
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # approx_dropout/, copied whole
MLP_HIDDEN = ((1024, 64), (1024, 1024), (2048, 2048), (4096, 4096))  # paper Table I
MLP_RATE = 0.7
# the layers' defaults (BLOCK, with and without propagation; diagonal tiles)
# beside the strided layout, block tiles with 4 slices (no gathers; their
# speed on a GPU is unmeasured) and the paper's settings (one pattern per
# batch, row-major tiles)
MLP_METHODS = ("stock", "rdp_block", "rdp_prop", "rdp", "rdp_s1", "tdp_blocks_s4", "tdp",
               "tdp_s1_rowmajor")
LM_RATES = (0.3, 0.5, 0.7)                                         # paper Table II
# LSTM LM methods (approx_dropout.methods): input dropout, and ROW with
# recurrent dropout (per step) at the same rate
LM_METHODS = ("stock", "row", "tile", "row_rec")
DEFAULT_MAX_MIB = 60.0
# The bundle's entry point, at its top: the bundle's own copy of this package,
# whatever else the host's Python has, runs on the bundle's own folder.
RUNNER_NAME = "run_bundle.py"
RUNNER_SCRIPT = '''#!/usr/bin/env python3
"""Run this unpacked GPU bundle: its gtests, then stock vs approx `caffe time`.

    python3 run_bundle.py --out OUT [--cpu] [--only GLOB ...] [--help]

Standard library only; approx_dropout.bundle.run (in python/ beside this
file) does the work, on this file's folder. Written by approx_dropout.bundle.pack.
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "python"))

from approx_dropout.bundle.run import main  # noqa: E402

sys.exit(main(["--bundle", str(HERE), *sys.argv[1:]]))
'''


class BundleError(RuntimeError):
    pass


def is_host_library(name: str) -> bool:
    return bool(HOST_LIBRARIES.match(name))


def ldd(path: Path) -> dict[str, str | None]:
    """soname -> resolved path (None when ldd says 'not found')."""
    proc = subprocess.run(["ldd", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BundleError(f"ldd {path} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    found: dict[str, str | None] = {}
    for line in proc.stdout.splitlines():
        if m := re.match(r"\s*(\S+) => (not found|(\S+) \(0x)", line):
            found[m.group(1)] = m.group(3)
    return found


def needed(path: Path) -> list[str]:
    """The DT_NEEDED entries of an ELF file."""
    proc = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BundleError(f"readelf -d {path} failed: {proc.stderr.strip()}")
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", proc.stdout)


def benchmark_nets() -> dict[str, str]:
    """file name -> prototxt text; names are <group>__<method>.prototxt."""
    out = {}
    for hidden in MLP_HIDDEN:
        group = f"mlp_{hidden[0]}x{hidden[1]}_p{MLP_RATE:g}"
        for method in MLP_METHODS:
            out[f"{group}__{method}.prototxt"] = nets.mlp_for_method(
                method, hidden, (MLP_RATE,) * 2)
    for rate in LM_RATES:
        for method in LM_METHODS:
            out[f"lm_2x1500_p{rate:g}__{method}.prototxt"] = nets.lm_for_method(method, rate)
    return out


def cmake_cache_value(build: Path, key: str) -> str | None:
    cache = build / "CMakeCache.txt"
    if cache.is_file():
        for line in cache.read_text(errors="replace").splitlines():
            if line.startswith(f"{key}:"):
                return line.split("=", 1)[1]
    return None


def git_commit() -> str | None:
    proc = subprocess.run(["git", "-C", str(PACKAGE_DIR), "rev-parse", "HEAD"],
                          capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def stage(build: Path, root: Path) -> dict[str, object]:
    """Copy the build, its libraries, the package and the nets under root."""
    missing = [f for f in ELF_FILES if not (build / f).is_file()]
    if missing:
        raise BundleError(f"{build} lacks {', '.join(missing)}: build it first "
                          f"(scripts/build.sh --cuda --cuda-arch 90)")
    for rel in ELF_FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(build / rel, root / rel)
    shutil.copytree(build / "python" / "caffe", root / "python" / "caffe", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(PACKAGE_DIR, root / "python" / "approx_dropout",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (root / RUNNER_NAME).write_text(RUNNER_SCRIPT)
    os.chmod(root / RUNNER_NAME, 0o755)
    libraries: dict[str, str] = {}
    for rel in ELF_FILES:
        for name, path in ldd(build / rel).items():
            if is_host_library(name) or name == "libcaffe.so":
                continue
            if path is None:
                raise BundleError(f"{build / rel} needs {name}, which ldd cannot find here")
            libraries[name] = path
    for name, path in sorted(libraries.items()):
        shutil.copyfile(os.path.realpath(path), root / "lib" / name)
        os.chmod(root / "lib" / name, 0o755)
    (root / "nets").mkdir()
    for name, text in benchmark_nets().items():
        (root / "nets" / name).write_text(text)
    check_closure(root)
    return {"libraries": {name: os.path.realpath(p) for name, p in sorted(libraries.items())}}


def check_closure(root: Path) -> None:
    """Every NEEDED library of every ELF file in the bundle is in lib/ or a host library."""
    have = {p.name for p in (root / "lib").iterdir()}
    elf = [root / rel for rel in ELF_FILES] + sorted((root / "lib").iterdir())
    for path in elf:
        for name in needed(path):
            if name not in have and not is_host_library(name):
                raise BundleError(f"{path.relative_to(root)} needs {name}, which is neither "
                                  f"in the bundle nor a host library")


def manifest(root: Path, build: Path, extra: dict[str, object]) -> dict[str, object]:
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        files[rel] = {"sha256": sha256(path), "bytes": path.stat().st_size}
    return {
        "format": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "build": str(build),
        "cuda": cmake_cache_value(build, "USE_CUDA") in ("ON", "TRUE", "1"),
        "cuda_arch": cmake_cache_value(build, "CUDA_ARCH"),
        "host_libraries": HOST_LIBRARIES.pattern,
        **extra,
        "files": files,
    }


def pack(build: Path, out: Path, name: str, max_mib: float = DEFAULT_MAX_MIB,
         xz_level: int = 6) -> Path:
    """Write out/name.tar.xz and out/name.tar.xz.sha256; returns the archive."""
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"{name}.tar.xz"
    with tempfile.TemporaryDirectory(prefix="gpu-bundle-", dir=out) as tmp:
        root = Path(tmp) / name
        (root / "lib").mkdir(parents=True)
        extra = stage(build, root)
        (root / "MANIFEST.json").write_text(json.dumps(manifest(root, build, extra), indent=1))
        partial = Path(tmp) / archive.name
        proc = subprocess.run(["tar", "-C", tmp, "-I", f"xz -T0 -{xz_level}", "-cf",
                               str(partial), name], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BundleError(f"tar failed: {proc.stderr.strip()}")
        mib = partial.stat().st_size / 2**20
        if mib > max_mib:
            raise BundleError(f"the archive is {mib:.1f} MiB, over the {max_mib:g} MiB limit")
        os.replace(partial, archive)
    digest = sha256(archive)
    archive.with_name(archive.name + ".sha256").write_text(f"{digest}  {archive.name}\n")
    return archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bundle.pack",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, required=True,
                        help="a Caffe build folder of this project (build/cuda)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the archive")
    parser.add_argument("--name", default="approx-dropout-gpu-bundle",
                        help="archive and top folder name")
    parser.add_argument("--max-mib", type=float, default=DEFAULT_MAX_MIB,
                        help="refuse an archive larger than this (default %(default)s)")
    parser.add_argument("--xz-level", type=int, default=6, choices=range(10), metavar="0-9")
    args = parser.parse_args(argv)
    try:
        archive = pack(args.build, args.out, args.name, args.max_mib, args.xz_level)
    except BundleError as err:
        print(f"bundle.pack: error: {err}", file=sys.stderr)
        return 1
    size = archive.stat().st_size
    print(f"bundle.pack: wrote {archive} ({size / 2**20:.1f} MiB, {size} bytes), "
          f"sha256 in {archive.name}.sha256")
    return 0
