#!/usr/bin/env python3
"""Download the pinned Caffe sdist, verify its sha256 and unpack it.

pip downloads the archive in hash-checking mode (--require-hashes, with the
pin from caffe_patch/caffe_source.txt), so pip compares the sha256 of the
file it fetched with the pin right after the download, before it unpacks the
sdist or runs its build backend to read its metadata; a substituted archive
never gets to run code. pip's own configuration (index, mirror, proxy,
certificates) applies as for any pip command.

The archive is cached (default ~/.cache/approx-dropout) and re-verified on
every use, so a corrupt or substituted cache entry fails instead of building.
The tree is unpacked into a temporary folder inside --dest and renamed into
place; the stamp (.source-sha256) is removed before that starts and written
last, so an interrupted unpack is redone on the next run, never accepted.
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

PIN_FILE = Path(__file__).resolve().parent / "caffe_source.txt"  # beside this script
STAMP = ".source-sha256"
EXTRACT_PREFIX = ".extract-"


class FetchError(Exception):
    """Why the source could not be fetched or unpacked (one line)."""


def read_pin(pin_file: Path | None = None) -> tuple[str, str, str]:
    """(requirement, sha256, top-level directory) from the pin file."""
    pin_file = pin_file or PIN_FILE
    for line in pin_file.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement, sha256, topdir = line.split()
            return requirement, sha256, topdir
    raise FetchError(f"{pin_file} names no source")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(archive: Path, sha256: str) -> None:
    actual = sha256_of(archive)
    if actual != sha256:
        raise FetchError(f"{archive} has sha256 {actual}, but {PIN_FILE.name} pins "
                         f"{sha256}; delete it to download again")


def pip_download_command(requirements: Path, into: Path) -> list[str]:
    # --require-hashes: pip checks the download against the pinned hash before
    # it unpacks the sdist or prepares its metadata (which runs its code).
    # --no-binary: the pin is the sdist's hash; a wheel would never match it.
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "--require-hashes", "-d", str(into), "-r", str(requirements)]


def download(requirement: str, sha256: str, cache: Path) -> Path:
    """The verified archive in cache, downloaded with pip if it is not there yet."""
    name, version = requirement.split("==")
    archive = cache / f"{name}-{version}.tar.gz"
    if archive.is_file():
        return archive
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{requirement} --hash=sha256:{sha256}\n")
        into = Path(tmp) / "download"
        cmd = pip_download_command(requirements, into)
        print("fetch_caffe:", " ".join(cmd), flush=True)
        if subprocess.run(cmd).returncode != 0:
            raise FetchError(f"pip could not download {requirement} with sha256 {sha256} "
                             f"(see pip's message above)")
        got = sorted(into.glob("*.tar.gz")) if into.is_dir() else []
        if len(got) != 1:
            raise FetchError(f"expected one .tar.gz from pip, got {[p.name for p in got]}")
        verify(got[0], sha256)  # our own check too: only a verified file enters the cache
        os.replace(got[0], archive)
    return archive


def _write_stamp(dest: Path, sha256: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=STAMP + ".", dir=dest)
    with os.fdopen(fd, "w") as f:
        f.write(sha256 + "\n")
    os.replace(tmp, dest / STAMP)


def unpack(archive: Path, sha256: str, topdir: str, dest: Path) -> Path:
    """dest/topdir, unpacked from archive unless the stamp says it already is.

    The archive is verified first, whatever the caller did, so nothing
    unverified is ever unpacked.
    """
    tree = dest / topdir
    stamp = dest / STAMP
    if tree.is_dir() and stamp.is_file() and stamp.read_text().strip() == sha256:
        return tree
    verify(archive, sha256)
    dest.mkdir(parents=True, exist_ok=True)
    # Invalidate first: from here until the stamp is written again the tree
    # counts as incomplete, whatever happens to this process.
    stamp.unlink(missing_ok=True)
    for stale in dest.glob(EXTRACT_PREFIX + "*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=EXTRACT_PREFIX, dir=dest) as tmp:
        with tarfile.open(archive) as tar:
            # The "data" filter refuses absolute paths and links out of dest; it
            # exists from Python 3.11.4 on (and in patched older releases).
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:
                tar.extractall(tmp)
        unpacked = Path(tmp) / topdir
        if not unpacked.is_dir():
            raise FetchError(f"{archive} has no {topdir}/")
        shutil.rmtree(tree, ignore_errors=True)
        os.replace(unpacked, tree)
    _write_stamp(dest, sha256)
    return tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, required=True,
                        help="folder to unpack into (the tree lands in a "
                             "subfolder named after the sdist)")
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get(
                            "APPROX_DROPOUT_CACHE",
                            Path.home() / ".cache/approx-dropout")),
                        help="where the downloaded archive is kept")
    args = parser.parse_args(argv)
    try:
        requirement, sha256, topdir = read_pin()
        archive = download(requirement, sha256, args.cache)
        tree = unpack(archive, sha256, topdir, args.dest)
    except (FetchError, OSError, tarfile.TarError) as e:
        print(f"fetch_caffe: error: {e}", file=sys.stderr)
        return 1
    print(tree)  # the last line of stdout: CMakeLists.txt reads the tree from it
    return 0


if __name__ == "__main__":
    sys.exit(main())
