"""Where converted datasets live, and how a conversion is cached safely.

A converted dataset is a folder named after the sha256 of its inputs (the
source files' contents and the conversion settings), so a changed source
gives a new folder instead of a stale one. The folder is built under a
temporary name and renamed into place when complete, so an interrupted
conversion never looks finished.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from ..caffe_env import source_checkout


class DataError(Exception):
    """A data source that is missing, unreadable or malformed (one line)."""


def data_root() -> Path:
    """APPROX_DROPOUT_DATA; else data/ of the source checkout this package is
    imported from (ignored by git); else approx-dropout/data in the user's
    cache folder (XDG_CACHE_HOME, default ~/.cache)."""
    if "APPROX_DROPOUT_DATA" in os.environ:
        return Path(os.environ["APPROX_DROPOUT_DATA"])
    checkout = source_checkout()
    if checkout is not None:
        return checkout / "data"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "approx-dropout" / "data"


def fingerprint(files: Iterable[Path], settings: str = "") -> str:
    """sha256 over the files' names and contents and the settings."""
    digest = hashlib.sha256(settings.encode())
    for path in files:
        digest.update(path.name.encode() + b"\0")
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror}") from None
    return digest.hexdigest()[:16]


def cached_folder(parent: Path, name: str, build: Callable[[Path], None]) -> Path:
    """parent/name, built by build(tmp_folder) unless it is already complete."""
    final = parent / name
    if final.is_dir():
        return final
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        build(tmp)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if final.is_dir():  # another process finished first
            return final
        raise
    return final
