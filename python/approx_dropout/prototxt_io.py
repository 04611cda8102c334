"""Read and write Caffe NetParameter prototxt files safely.

Reading gives one-line errors for missing, unreadable or unparsable files;
writing goes to a temporary file in the target's folder and is renamed into
place, so a failure never leaves a half-written file, and an in-place
rewrite first keeps the original as a backup.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import ModuleType

from google.protobuf import text_format

from . import caffe_env


class PrototxtError(Exception):
    """A prototxt that cannot be read, parsed, used or written (one line)."""


def caffe_pb2() -> ModuleType:
    try:
        return caffe_env.import_caffe_pb2()
    except caffe_env.CaffeNotBuiltError as e:
        raise PrototxtError(str(e)) from None


def read_net(path: str | os.PathLike[str]):
    """Parse a NetParameter from a text prototxt."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise PrototxtError(f"cannot read {path}: {reason}") from None
    net = caffe_pb2().NetParameter()
    try:
        text_format.Parse(text, net)
    except text_format.ParseError as e:
        raise PrototxtError(f"cannot parse {path} as a Caffe net: {e}") from None
    if len(net.layers):
        raise PrototxtError(
            f"{path} uses the deprecated V1 'layers' format; convert it with "
            f"Caffe's upgrade_net_proto_text first")
    return net


def net_to_text(net, header: str = "") -> str:
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + text_format.MessageToString(net)


def _free_backup_name(path: Path) -> Path:
    backup = path.with_name(path.name + ".bak")
    n = 1
    while backup.exists():
        backup = path.with_name(f"{path.name}.bak{n}")
        n += 1
    return backup


def write_text_atomic(path: str | os.PathLike[str], text: str,
                      backup: bool = False) -> Path | None:
    """Write text to path via a temporary file and a rename.

    With backup=True and an existing path, the old file is first copied to
    the first free name of path.bak, path.bak1, ... (never overwriting an
    older backup), which is returned.
    """
    path = Path(path)
    if path.is_dir():
        raise PrototxtError(f"cannot write {path}: it is a directory")
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                   dir=folder if str(folder) else ".")
    except OSError as e:
        raise PrototxtError(f"cannot write {path}: {e.strerror}") from None
    saved = None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            shutil.copymode(path, tmp)
            if backup:
                saved = _free_backup_name(path)
                shutil.copy2(path, saved)
        else:  # mkstemp creates 0600; a new file gets the usual umask mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise PrototxtError(f"cannot write {path}: {e.strerror or e}") from None
    return saved
