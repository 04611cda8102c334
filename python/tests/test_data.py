"""Dataset conversion on small fixtures: IDX -> HDF5, text -> token ids."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest

from approx_dropout.data import fashion_mnist as fm
from approx_dropout.data import text as dt
from approx_dropout.data.cache import DataError


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    raw = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.fixture
def fashion_dir(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir()
    for split, n in (("train", 7), ("test", 3)):
        images_name, labels_name = fm.FILES[split]
        write_idx(src / images_name, rng.integers(0, 256, (n, 28, 28)))
        write_idx(src / labels_name, rng.integers(0, 10, n))
    return src


def test_read_idx_matches_a_plain_reference(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    for compress in (True, False):
        path = tmp_path / f"a{compress}.idx"
        write_idx(path, array, compress)
        np.testing.assert_array_equal(fm.read_idx(path), array)


@pytest.mark.parametrize("content,message", [
    (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00", "not an unsigned-byte IDX file"),
    (b"\x00\x00\x08\x02\x00\x00", "truncated IDX header"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "says (5,) (5 bytes) but the file holds 2"),
    (b"\x1f\x8b\x08\x00garbage", "cannot read"),
])
def test_bad_idx_files(tmp_path, content, message):
    path = tmp_path / "bad.idx"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message.replace("(", "\\(").replace(")", "\\)")):
        fm.read_idx(path)


def test_fashion_mnist_to_hdf5_is_scaled_and_cached(fashion_dir, tmp_path):
    cache = tmp_path / "cache"
    lists = fm.prepare(fashion_dir, cache, expect_sizes=False)
    h5_path = Path(lists["train"].read_text().strip())
    assert h5_path.is_file() and h5_path.parent == lists["train"].parent
    raw_images = fm.read_idx(fashion_dir / fm.FILES["train"][0])
    raw_labels = fm.read_idx(fashion_dir / fm.FILES["train"][1])
    with h5py.File(h5_path) as h5:
        assert h5["data"].dtype == np.float32 and h5["data"].shape == (7, 784)
        np.testing.assert_allclose(h5["data"][...], raw_images.reshape(7, 784) / 255.0,
                                   rtol=1e-6)
        np.testing.assert_array_equal(h5["label"][...], raw_labels)
    assert fm.prepare(fashion_dir, cache, expect_sizes=False) == lists  # cached
    # a changed source file gives a new folder, never the stale one
    write_idx(fashion_dir / fm.FILES["test"][1], np.zeros(3))
    assert fm.prepare(fashion_dir, cache, expect_sizes=False)["test"] != lists["test"]
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []


def test_fashion_mnist_errors(fashion_dir, tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        fm.prepare(tmp_path / "nowhere", tmp_path / "cache")
    with pytest.raises(DataError, match="expected 60000"):
        fm.prepare(fashion_dir, tmp_path / "cache")  # the real sizes are enforced
    assert not any((tmp_path / "cache").iterdir())  # nothing half-built left
    write_idx(fashion_dir / fm.FILES["train"][1], np.full(7, 12))
    with pytest.raises(DataError, match="labels must be 0..9"):
        fm.load_split("train", fashion_dir)


def test_tokenizer():
    text = (".. _label:\n\n=====\nTitle 2\n=====\n\nSome ``__init__`` code, it's\n"
            "version 3.11!\n\n.. note:: skipped\n\nLast\n")
    assert dt.tokenize(text) == ["title", "N", "<eos>", "some", "init", "code", "it", "s",
                                 "version", "N", "N", "<eos>", "last", "<eos>"]


def test_split_rule_is_by_file_and_stable():
    assert dt.split_of("tutorial/introduction.rst.txt") == dt.split_of(
        "tutorial/introduction.rst.txt")
    buckets = [dt.split_of(f"f{i}.rst.txt") for i in range(2000)]
    assert 0.02 < buckets.count("test") / 2000 < 0.08
    assert 0.02 < buckets.count("valid") / 2000 < 0.08


def test_vocab_and_ids():
    tokens = "b a c a b a d".split()
    vocab = dt.build_vocab(tokens, 3)
    assert vocab == ["a", "b", "<unk>"]  # counts a 3, b 2; c, d tie and are cut
    np.testing.assert_array_equal(dt.to_ids("a d b".split(), vocab), [0, 2, 1])
    with pytest.raises(DataError, match="at least 2"):
        dt.build_vocab(tokens, 1)


def test_batchify_layout():
    ids = np.arange(23)
    out = dt.batchify(ids, streams=2, steps=3)
    # 11 tokens per stream, 10 (word, next word) pairs, cut to 9 = 3 x 3 rows
    words = np.arange(22).reshape(2, 11).T
    np.testing.assert_array_equal(out["words"], words[:9])
    np.testing.assert_array_equal(out["label"], words[1:10])
    assert out["cont"][0].tolist() == [0, 0] and out["cont"][1:].min() == 1
    with pytest.raises(DataError, match="too few"):
        dt.batchify(np.arange(5), streams=2, steps=3)


def test_corpus_prepare_on_a_fixture(tmp_path):
    src = tmp_path / "_sources"
    names = [f"doc{i}.rst.txt" for i in range(60)]
    for i, name in enumerate(names):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(f"Paragraph {i} about python and code.\n\nMore text here.\n")
    lists = dt.prepare(streams=2, steps=3, vocab_size=6, source_dir=src, cache=tmp_path / "c")
    folder = lists["train"].parent
    vocab = (folder / "vocab.txt").read_text().split()
    assert len(vocab) == 6 and vocab[-1] == "<unk>"
    with h5py.File(lists["valid"].read_text().strip()) as h5:
        assert set(h5) == {"words", "cont", "label"}
        assert h5["words"].shape[0] % 3 == 0 and h5["words"].shape[1] == 2
    with pytest.raises(DataError, match="apt-get install python3.11-doc"):
        dt.prepare(source_dir=tmp_path / "none", cache=tmp_path / "c")
