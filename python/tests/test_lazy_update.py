"""The solver's deferred update as pycaffe users meet it.

A net with approximate dropout layers trained by an SGD solver defers the
update of what the layers skipped; whatever pycaffe reads after solver.step
must be what Caffe's own update (approx_dropout_param { update: STOCK })
gives from the same seed, up to float rounding.
"""
from __future__ import annotations

import numpy as np
import pytest

NET = """
name: "mlp"
layer { name: "data" type: "DummyData" top: "data" top: "target"
  dummy_data_param { shape { dim: 16 dim: 30 } shape { dim: 16 dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "gaussian" std: 1 } } }
layer { name: "fc1" type: "ApproxDropoutInnerProduct" bottom: "data" top: "fc1" top: "fc1_pattern"
  inner_product_param { num_output: 200 weight_filler { type: "gaussian" std: 0.05 }
    bias_filler { type: "constant" value: 0.1 } }
  approx_dropout_param { dropout_ratio: 0.7 } }
layer { name: "relu1" type: "ReLU" bottom: "fc1" top: "fc1" }
layer { name: "fc2" type: "ApproxDropoutInnerProduct" bottom: "fc1" bottom: "fc1_pattern"
  top: "fc2" inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.05 } }
  approx_dropout_param { dropout_ratio: 0 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "fc2" bottom: "target" top: "loss" }
"""


def _solver(caffe, tmp_path, update: str):
    net = tmp_path / "net.prototxt"
    net.write_text(NET)
    solver = tmp_path / f"solver_{update}.prototxt"
    solver.write_text(
        f'net: "{net}"\nbase_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.01\n'
        f'lr_policy: "step"\ngamma: 0.5\nstepsize: 15\nmax_iter: 1000\ndisplay: 0\n'
        f'random_seed: 1701\nsnapshot_after_train: false\n'
        f"approx_dropout_param {{ update: {update} }}\n")
    caffe.set_mode_cpu()
    return caffe.SGDSolver(str(solver))


def _params(solver) -> dict[str, np.ndarray]:
    return {f"{name}/{i}": blob.data.copy()
            for name, blobs in solver.net.params.items() for i, blob in enumerate(blobs)}


def _assert_close(lazy: dict[str, np.ndarray], stock: dict[str, np.ndarray], when: str):
    assert lazy.keys() == stock.keys()
    for key in stock:
        # the premise: training converges (a diverged run compares noise)
        assert np.isfinite(stock[key]).all() and np.isfinite(lazy[key]).all(), key
        scale = float(np.abs(stock[key]).max())
        assert scale < 100, f"{key} {when}: the training diverged"
        worst = float(np.abs(lazy[key] - stock[key]).max())
        assert worst <= 1e-4 * scale, f"{key} {when}: differs by {worst} (scale {scale})"


def _run_both(caffe, solvers, seed: int, run) -> None:
    """run(solver) for each solver from the same seed (Caffe's RNG is global)."""
    for solver in solvers:
        caffe.set_random_seed(seed)
        run(solver)


def _assert_same_loss(lazy, stock) -> None:
    assert float(lazy.net.blobs["loss"].data) == pytest.approx(
        float(stock.net.blobs["loss"].data), rel=1e-4)


def test_step_one_loop_reads_current_weights(caffe, tmp_path):
    stock = _solver(caffe, tmp_path, "STOCK")
    lazy = _solver(caffe, tmp_path, "AUTO")
    for iteration in range(60):
        _run_both(caffe, (stock, lazy), iteration, lambda s: s.step(1))
        _assert_close(_params(lazy), _params(stock), f"after step {iteration + 1}")
        _assert_same_loss(lazy, stock)


def test_long_step_then_forward_sees_current_weights(caffe, tmp_path):
    stock = _solver(caffe, tmp_path, "STOCK")
    lazy = _solver(caffe, tmp_path, "AUTO")
    _run_both(caffe, (stock, lazy), 3, lambda s: s.step(80))
    _assert_close(_params(lazy), _params(stock), "after step(80)")
    # a forward pass outside the solver (TEST-style use of the train net)
    _run_both(caffe, (stock, lazy), 4, lambda s: s.net.forward())
    _assert_same_loss(lazy, stock)


def test_weights_set_between_steps_are_kept(caffe, tmp_path):
    # Net surgery between two steps: the deferral starts afresh from what the
    # user wrote, as Caffe's update does.
    stock = _solver(caffe, tmp_path, "STOCK")
    lazy = _solver(caffe, tmp_path, "AUTO")
    _run_both(caffe, (stock, lazy), 5, lambda s: s.step(10))
    for solver in (stock, lazy):
        solver.net.params["fc1"][0].data[::2] = 0.01
    _run_both(caffe, (stock, lazy), 6, lambda s: s.step(10))
    _assert_close(_params(lazy), _params(stock), "after surgery")


def _caffe_train(caffe_tool, tmp_path, update: str, *args: str) -> dict[str, np.ndarray]:
    """`caffe train` 30 iterations with a snapshot at 20, resumed from it with
    -snapshot (as a user restarting a run does); the final weights."""
    import subprocess

    from approx_dropout.prototxt.io import caffe_pb2

    folder = tmp_path / update
    folder.mkdir()
    net = folder / "net.prototxt"
    net.write_text(NET)
    solver = folder / "solver.prototxt"
    solver.write_text(
        f'net: "{net}"\nbase_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.01\n'
        f'lr_policy: "step"\ngamma: 0.5\nstepsize: 12\nmax_iter: 30\ndisplay: 0\n'
        f'random_seed: 1701\nsnapshot: 20\nsnapshot_prefix: "{folder}/snap"\n'
        f"approx_dropout_param {{ update: {update} }}\n")
    for extra in ([], [f"-snapshot={folder}/snap_iter_20.solverstate"]):
        proc = subprocess.run([str(caffe_tool), "train", f"-solver={solver}", *extra],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
    weights = caffe_pb2().NetParameter()
    weights.ParseFromString((folder / "snap_iter_30.caffemodel").read_bytes())
    return {f"{layer.name}/{i}": np.array(blob.data)
            for layer in weights.layer for i, blob in enumerate(layer.blobs)}


def test_caffe_train_resumed_from_a_snapshot(tmp_path):
    from approx_dropout import caffe_env

    tool = caffe_env.build_dir() / "tools" / "caffe"
    _assert_close(_caffe_train(tool, tmp_path, "AUTO"), _caffe_train(tool, tmp_path, "STOCK"),
                  "after caffe train -snapshot")
