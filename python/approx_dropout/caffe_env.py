"""Locate and import the pycaffe that this project builds.

pycaffe is not pip-installable: scripts/build.sh assembles it under
``<build dir>/python/caffe``. Tools and tests find it here, in this order:
the ``APPROX_DROPOUT_BUILD`` environment variable, then ``build/cpu`` of the
source checkout this package is imported from (an editable install, or
PYTHONPATH=python), if it is imported from one. A copy of the package
outside a checkout (the GPU bundle, a wheel) needs APPROX_DROPOUT_BUILD or an
explicit build folder.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType


class CaffeNotBuiltError(ImportError):
    pass


def source_checkout() -> Path | None:
    """The project checkout this package is imported from, or None.

    The package lives at python/approx_dropout of a checkout; a copy elsewhere
    (the GPU bundle, an installed wheel) has no caffe_patch/ two levels up.
    Only defaults use it (the build folder, the data folder): nothing in the
    package needs a checkout.
    """
    root = Path(__file__).resolve().parents[2]
    if (root / "caffe_patch" / "apply_patch.py").is_file() and (root / "CMakeLists.txt").is_file():
        return root
    return None


def build_dir() -> Path:
    """APPROX_DROPOUT_BUILD, else build/cpu of the source checkout."""
    if "APPROX_DROPOUT_BUILD" in os.environ:
        return Path(os.environ["APPROX_DROPOUT_BUILD"])
    checkout = source_checkout()
    if checkout is None:
        raise CaffeNotBuiltError(
            "no Caffe build known: this approx_dropout is not imported from a source "
            "checkout, so point APPROX_DROPOUT_BUILD at a build folder of the project")
    return checkout / "build" / "cpu"


def caffe_source_dir(build: Path | None = None) -> Path:
    """The Caffe source tree a build compiled (its models/ and examples/ hold
    BVLC's own nets), as the build's configure step recorded it."""
    record = (build or build_dir()) / "caffe_source_dir.txt"
    try:
        source = Path(record.read_text().strip())
    except OSError as err:
        raise CaffeNotBuiltError(f"{record}: {err.strerror}; run scripts/build.sh") from err
    if not (source / "models").is_dir():
        raise CaffeNotBuiltError(f"{source} (named by {record}) has no models/ folder; "
                                 f"run scripts/build.sh")
    return source


def pycaffe_dir(build: Path | None = None) -> Path:
    path = (build or build_dir()) / "python"
    if not (path / "caffe" / "proto" / "caffe_pb2.py").is_file():
        raise CaffeNotBuiltError(
            f"no pycaffe under {path}: run scripts/build.sh, or point "
            f"APPROX_DROPOUT_BUILD at a build folder")
    return path


def import_caffe(build: Path | None = None) -> ModuleType:
    """Import pycaffe from the project's build, quieting glog by default."""
    path = str(pycaffe_dir(build))
    if path not in sys.path:
        sys.path.insert(0, path)
    os.environ.setdefault("GLOG_minloglevel", "2")
    if "caffe_pb2" in sys.modules:
        # Loaded standalone before: reuse it, since registering caffe.proto
        # twice in protobuf's descriptor pool is an error.
        sys.modules.setdefault("caffe.proto.caffe_pb2", sys.modules["caffe_pb2"])
    caffe = importlib.import_module("caffe")
    # A module found ready in sys.modules is not set on its parent package.
    caffe.proto.caffe_pb2 = sys.modules["caffe.proto.caffe_pb2"]
    return caffe


def import_caffe_pb2(build: Path | None = None) -> ModuleType:
    """Import only the generated protobuf module, without loading _caffe.so.

    caffe/__init__.py loads the C++ extension; the generated module needs only
    google.protobuf, so it is loaded from its file as ``caffe_pb2``.
    """
    if "caffe.proto.caffe_pb2" in sys.modules:
        return sys.modules["caffe.proto.caffe_pb2"]
    if "caffe_pb2" not in sys.modules:
        path = pycaffe_dir(build) / "caffe" / "proto" / "caffe_pb2.py"
        spec = importlib.util.spec_from_file_location("caffe_pb2", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["caffe_pb2"] = module
        spec.loader.exec_module(module)
    return sys.modules["caffe_pb2"]
