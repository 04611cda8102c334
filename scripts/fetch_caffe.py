#!/usr/bin/env python3
"""Download the pinned Caffe sdist, verify its sha256 and unpack it.

The archive is cached (default ~/.cache/approx-dropout) and re-verified on
every use, so a corrupt or substituted cache entry fails instead of building.
The unpacked tree is recreated whenever its stamp does not name the same hash.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PIN_FILE = Path(__file__).resolve().parent.parent / "caffe_patch/caffe_source.txt"


def read_pin(pin_file: Path = PIN_FILE) -> tuple[str, str, str]:
    for line in pin_file.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement, sha256, topdir = line.split()
            return requirement, sha256, topdir
    raise SystemExit(f"fetch_caffe: error: {pin_file} names no source")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(requirement: str, cache: Path) -> Path:
    name, version = requirement.split("==")
    archive = cache / f"{name}-{version}.tar.gz"
    if not archive.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
                   "--no-binary", ":all:", "-d", tmp, requirement]
            print("fetch_caffe:", " ".join(cmd), flush=True)
            if subprocess.run(cmd).returncode != 0:
                raise SystemExit(f"fetch_caffe: error: pip could not download "
                                 f"{requirement}")
            got = list(Path(tmp).glob("*.tar.gz"))
            if len(got) != 1:
                raise SystemExit(f"fetch_caffe: error: expected one .tar.gz "
                                 f"from pip, got {[p.name for p in got]}")
            os.replace(got[0], archive)
    return archive


def unpack(archive: Path, sha256: str, topdir: str, dest: Path) -> Path:
    tree = dest / topdir
    stamp = dest / ".source-sha256"
    if tree.is_dir() and stamp.is_file() and stamp.read_text().strip() == sha256:
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        # The "data" filter refuses absolute paths and links out of dest; it
        # exists from Python 3.11.4 on (and in patched older releases).
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)
    if not tree.is_dir():
        raise SystemExit(f"fetch_caffe: error: {archive} has no {topdir}/")
    stamp.write_text(sha256 + "\n")
    return tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dest", type=Path, required=True,
                        help="folder to unpack into (the tree lands in a "
                             "subfolder named after the sdist)")
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get(
                            "APPROX_DROPOUT_CACHE",
                            Path.home() / ".cache/approx-dropout")),
                        help="where the downloaded archive is kept")
    args = parser.parse_args(argv)
    requirement, sha256, topdir = read_pin()
    archive = download(requirement, args.cache)
    actual = sha256_of(archive)
    if actual != sha256:
        raise SystemExit(f"fetch_caffe: error: {archive} has sha256 {actual}, "
                         f"but {PIN_FILE.name} pins {sha256}; delete it to "
                         f"download again")
    print(unpack(archive, sha256, topdir, args.dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
