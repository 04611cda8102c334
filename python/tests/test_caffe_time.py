"""approx_dropout.harness.caffe_time against the real `caffe time` of the build,
and scripts/bench/time_net.py, its command line."""
from __future__ import annotations

import subprocess
import sys

import pytest

from approx_dropout.harness import caffe_time
from conftest import REPO

MLP = REPO / "prototxt/mlp_bench_stock.prototxt"
SCRIPT = REPO / "scripts/bench/time_net.py"


def test_caffe_time_table_of_the_stock_mlp():
    timing = caffe_time.run(MLP, iterations=2)
    assert list(timing.forward) == ["data", "fc1", "relu1", "drop1", "fc2",
                                    "relu2", "drop2", "fc3", "loss"]
    assert set(timing.backward) == set(timing.forward)
    assert all(t >= 0 for t in timing.forward.values())
    # the 2048x2048 product dominates anything elementwise
    assert timing.forward["fc2"] > timing.forward["drop2"]
    assert 0 < timing.forward_total < timing.iteration
    assert 0 < timing.backward_total < timing.iteration
    assert "forward-backward per iteration" in timing.table()


def test_parse_rejects_output_without_a_table():
    with pytest.raises(caffe_time.CaffeTimeError, match="Average time per layer"):
        caffe_time.parse("I1128 caffe.cpp:100] nothing here\n")


def test_cli_missing_prototxt_is_one_clear_line(tmp_path):
    missing = tmp_path / "nope.prototxt"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(missing)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"time_net: error: {missing}: no such prototxt"


def test_cli_broken_prototxt_reports_caffe_error(tmp_path):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('layer { name: "x" type: "NoSuchLayer" top: "y" }\n')
    proc = subprocess.run([sys.executable, str(SCRIPT), str(bad)], capture_output=True,
                          text=True)
    assert proc.returncode == 1
    assert "caffe time failed" in proc.stderr
    assert "NoSuchLayer" in proc.stderr


def test_cli_prints_the_table():
    proc = subprocess.run([sys.executable, str(SCRIPT), str(MLP), "--iterations", "1"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"caffe time: {MLP}, 1 iterations, TRAIN, CPU"
    assert lines[1].split() == ["layer", "forward", "ms", "backward", "ms"]
    assert lines[-1].startswith("forward-backward per iteration: ")
