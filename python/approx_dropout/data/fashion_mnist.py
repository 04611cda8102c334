"""Fashion-MNIST (Debian's dataset-fashion-mnist) as HDF5 for Caffe's HDF5Data.

The IDX files under /usr/share/datasets/fashion-mnist/ become
train.h5 (60 000 images) and test.h5 (10 000): "data" float32 N x 784 scaled
to [0, 1], "label" float32 N, plus train.txt / test.txt, the list files that
HDF5Data's `source` names. Cached under data/fashion-mnist-<hash>/, keyed by
the source files' contents.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from .cache import DataError, cached_folder, data_root, fingerprint

SOURCE_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
SIZES = {"train": 60000, "test": 10000}
_IDX_TYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (the MNIST file format), gzip-compressed or not."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise DataError(f"cannot read {path}: {reason}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(shape))
    if len(raw) - header != count:
        raise DataError(f"{path}: IDX header says {shape} ({count} bytes) but the "
                        f"file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_split(split: str, source_dir: Path = SOURCE_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 784 float32 in [0, 1], labels N float32) of one split."""
    images_file, labels_file = (source_dir / name for name in FILES[split])
    images = read_idx(images_file)
    labels = read_idx(labels_file)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{images_file}: expected N x 28 x 28 images, got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{labels_file}: expected {len(images)} labels, got {labels.shape}")
    if labels.max(initial=0) > 9:
        raise DataError(f"{labels_file}: labels must be 0..9, found {labels.max()}")
    return (images.reshape(len(images), 784).astype(np.float32) / 255,
            labels.astype(np.float32))


def check_source(source_dir: Path) -> list[Path]:
    files = [source_dir / name for pair in FILES.values() for name in pair]
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise DataError(
            f"Fashion-MNIST not found in {source_dir} (missing {', '.join(missing)}); "
            f"install Debian's package: apt-get install dataset-fashion-mnist "
            f"(scripts/setup.sh does)")
    return files


def prepare(source_dir: Path = SOURCE_DIR, cache: Path | None = None,
            expect_sizes: bool = True) -> dict[str, Path]:
    """Convert once; return {"train": list file, "test": list file} for HDF5Data."""
    import h5py
    files = check_source(source_dir)
    key = fingerprint(files, "fashion-mnist v1: float32 /255, N x 784")
    parent = (cache or data_root()).resolve()
    final = parent / f"fashion-mnist-{key}"

    def build(folder: Path) -> None:
        for split in FILES:
            images, labels = load_split(split, source_dir)
            if expect_sizes and len(images) != SIZES[split]:
                raise DataError(f"Fashion-MNIST {split} has {len(images)} images, "
                                f"expected {SIZES[split]}")
            with h5py.File(folder / f"{split}.h5", "w") as h5:
                h5.create_dataset("data", data=images)
                h5.create_dataset("label", data=labels)
            # HDF5Data opens the listed path as written: the final location
            (folder / f"{split}.txt").write_text(f"{final / split}.h5\n")

    folder = cached_folder(parent, final.name, build)
    return {split: folder / f"{split}.txt" for split in FILES}
