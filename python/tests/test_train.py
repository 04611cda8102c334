"""The training harness: Caffe's solver really trains, the TEST net follows."""
from __future__ import annotations

import pytest

from approx_dropout.harness import train
from approx_dropout.prototxt import nets


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    import h5py
    import numpy as np
    folder = tmp_path_factory.mktemp("h5")
    rng = np.random.default_rng(0)
    # a separable toy problem: class c lights up inputs 10c .. 10c + 9
    y = rng.integers(0, 10, 400)
    x = rng.uniform(0, 0.3, (400, 784)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, 10 * c:10 * c + 10] += 1
    y = y.astype(np.float32)
    out = {}
    for split, sl in (("train", slice(0, 300)), ("test", slice(300, 400))):
        with h5py.File(folder / f"{split}.h5", "w") as h5:
            h5["data"], h5["label"] = x[sl], y[sl]
        (folder / f"{split}.txt").write_text(str(folder / f"{split}.h5") + "\n")
        out[split] = str(folder / f"{split}.txt")
    return out


@pytest.mark.parametrize("flavour", ["stock", "rdp", "tdp"])
def test_training_improves_test_accuracy(caffe, lists, flavour):
    text = nets.mlp(flavour, (64, 64), (0.3, 0.3), batch=30,
                    sources=(lists["train"], lists["test"]), test_batch=50)
    seen = []
    result = train.train(text, 300, 100, 2, train.SolverSettings(base_lr=0.01, seed=1),
                         progress=lambda i, s: seen.append(i))
    assert seen == [100, 200, 300]
    acc = [e.accuracy for e in result.evaluations]
    assert acc[-1] > 0.9 and acc[-1] > acc[0] - 0.05  # chance is 0.1
    assert result.train_seconds > 0 and result.seconds_per_iteration > 0


def test_bad_budget(caffe):
    with pytest.raises(ValueError, match=">= 1"):
        train.train("", 0, 1, 1)
