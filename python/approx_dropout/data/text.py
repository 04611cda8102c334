"""A word-level English corpus for the LSTM language model: Python's docs.

Source: the reStructuredText sources of Python 3.11's documentation from
Debian's python3.11-doc (/usr/share/doc/python3.11/html/_sources/**/*.rst.txt,
about 1.4 M words). Like the Penn Treebank in size; it is not PTB, and its
perplexities are not comparable with PTB's.

Preprocessing, deterministic:
  - lines starting with ".." (directives, comments, targets) and lines made
    only of punctuation (section over/underlines) are dropped;
  - text is lower-cased; tokens are runs of letters a-z (so "__init__" gives
    "init"), and every run of digits becomes "N" (as in PTB);
  - each paragraph (a block ended by a blank line) ends with "<eos>";
  - split by file: a file goes to test if int(sha256(relative path)[:8], 16)
    % 20 == 0, to valid if it is 1, else to train (about 90 / 5 / 5 %);
  - vocabulary: the 9 999 most frequent train tokens (ties alphabetical) plus
    "<unk>", which replaces every other token in all splits.

For Caffe's HDF5Data each split becomes words / cont / label datasets of
shape (rows, streams), time-major: the split's token stream is cut into
`streams` equal parts, one per column, so that HDF5Data with batch_size =
steps yields steps x streams blocks that continue each other (truncated
backpropagation through time, the LSTM carrying its state across batches);
label is the next word; cont is 0 on the first row only.
"""
from __future__ import annotations

import collections
import hashlib
import json
import re
from pathlib import Path

import numpy as np

from .cache import DataError, cached_folder, data_root, fingerprint

SOURCE_DIR = Path("/usr/share/doc/python3.11/html/_sources")
SPLITS = ("train", "valid", "test")
UNK, EOS = "<unk>", "<eos>"
TOKENIZER_VERSION = "pydoc-tokens v1"
_TOKEN = re.compile(r"[a-z]+|[0-9]+")
_RULE = re.compile(r"^[\s!-/:-@\[-`{-~]+$")  # only ASCII punctuation


def tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    in_paragraph = False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            if in_paragraph:
                tokens.append(EOS)
            in_paragraph = False
            continue
        if stripped.startswith("..") or _RULE.match(stripped):
            continue
        words = ["N" if w[0].isdigit() else w for w in _TOKEN.findall(stripped.lower())]
        if words:
            tokens.extend(words)
            in_paragraph = True
    if in_paragraph:
        tokens.append(EOS)
    return tokens


def split_of(relative_path: str) -> str:
    bucket = int(hashlib.sha256(relative_path.encode()).hexdigest()[:8], 16) % 20
    return "test" if bucket == 0 else "valid" if bucket == 1 else "train"


def source_files(source_dir: Path = SOURCE_DIR) -> list[Path]:
    files = sorted(source_dir.rglob("*.rst.txt")) if source_dir.is_dir() else []
    if not files:
        raise DataError(
            f"no *.rst.txt files under {source_dir}; install Debian's package: "
            f"apt-get install python3.11-doc (scripts/setup.sh does)")
    return files


def read_splits(source_dir: Path = SOURCE_DIR) -> dict[str, list[str]]:
    """Token streams of train / valid / test, files in sorted path order."""
    streams: dict[str, list[str]] = {split: [] for split in SPLITS}
    for path in source_files(source_dir):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
        streams[split_of(path.relative_to(source_dir).as_posix())].extend(tokenize(text))
    for split, tokens in streams.items():
        if not tokens:
            raise DataError(f"the {split} split of {source_dir} has no tokens")
    return streams


def build_vocab(tokens: list[str], size: int) -> list[str]:
    """The size - 1 most frequent tokens (ties alphabetical), then <unk>."""
    if size < 2:
        raise DataError(f"vocabulary size must be at least 2, got {size}")
    counts = collections.Counter(t for t in tokens if t != UNK)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [w for w, _ in ranked[:size - 1]] + [UNK]


def to_ids(tokens: list[str], vocab: list[str]) -> np.ndarray:
    index = {w: i for i, w in enumerate(vocab)}
    unk = index[UNK]
    return np.fromiter((index.get(t, unk) for t in tokens), dtype=np.int64, count=len(tokens))


def batchify(ids: np.ndarray, streams: int, steps: int) -> dict[str, np.ndarray]:
    """words / cont / label, each (rows, streams) with rows a multiple of steps."""
    length = len(ids) // streams
    rows = (length - 1) // steps * steps
    if rows < steps:
        raise DataError(f"{len(ids)} tokens are too few for {streams} streams of "
                        f"{steps} steps")
    columns = ids[:streams * length].reshape(streams, length).T
    cont = np.ones((rows, streams), dtype=np.float32)
    cont[0] = 0
    return {"words": columns[:rows].astype(np.float32),
            "cont": cont,
            "label": columns[1:rows + 1].astype(np.float32)}


def prepare(streams: int = 20, steps: int = 35, vocab_size: int = 10000,
            source_dir: Path = SOURCE_DIR, cache: Path | None = None) -> dict[str, Path]:
    """Convert once; return {split: list file for HDF5Data} (and corpus.json beside)."""
    import h5py
    files = source_files(source_dir)
    settings = f"{TOKENIZER_VERSION} vocab={vocab_size} streams={streams} steps={steps}"
    key = fingerprint(files, settings + "".join(str(p.relative_to(source_dir)) for p in files))
    parent = (cache or data_root()).resolve()
    final = parent / f"pydoc-corpus-{key}"

    def build(folder: Path) -> None:
        tokens = read_splits(source_dir)
        vocab = build_vocab(tokens["train"], vocab_size)
        stats = {"source": str(source_dir), "settings": settings, "vocab_size": len(vocab),
                 "splits": {}}
        for split in SPLITS:
            ids = to_ids(tokens[split], vocab)
            arrays = batchify(ids, streams, steps)
            with h5py.File(folder / f"{split}.h5", "w") as h5:
                for name, array in arrays.items():
                    h5.create_dataset(name, data=array)
            (folder / f"{split}.txt").write_text(f"{final / split}.h5\n")
            stats["splits"][split] = {
                "tokens": len(ids), "rows": len(arrays["words"]),
                "batches": len(arrays["words"]) // steps,
                "unk_rate": float(np.mean(ids == len(vocab) - 1))}
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
        (folder / "corpus.json").write_text(json.dumps(stats, indent=1))

    folder = cached_folder(parent, final.name, build)
    return {split: folder / f"{split}.txt" for split in SPLITS}
