"""Read Caffe NetParameter prototxt files safely, and write nets as text.

Reading gives one-line errors (PrototxtError) for missing, unreadable or
unparsable files, and the bytes read, so that a rewrite can detect changes;
net_to_text is the text a net is written as. Writing itself (atomic, locked,
with backups, refusing read-only targets) is approx_dropout.files, which
knows nothing of prototxt and raises its own FileWriteError.
"""
from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from google.protobuf import text_format

from .. import caffe_env


class PrototxtError(Exception):
    """A prototxt that cannot be read, parsed or used (one line); a file that
    cannot be written is approx_dropout.files.FileWriteError."""


def caffe_pb2() -> ModuleType:
    try:
        return caffe_env.import_caffe_pb2()
    except caffe_env.CaffeNotBuiltError as e:
        raise PrototxtError(str(e)) from None


def read_net_file(path: str | os.PathLike[str]):
    """(NetParameter, the file's bytes): the bytes let a rewrite detect changes."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
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
    return net, raw


def read_net(path: str | os.PathLike[str]):
    """Parse a NetParameter from a text prototxt."""
    return read_net_file(path)[0]


def net_to_text(net, header: str = "") -> str:
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + text_format.MessageToString(net)
