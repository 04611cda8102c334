"""The benchmark scripts run end to end on tiny sizes and write their results
(speed itself is measured by running them, never asserted in tests)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run scripts/<script> (e.g. "bench/bench_mlp.py") with this interpreter."""
    return subprocess.run([sys.executable, str(REPO / "scripts" / script), *args],
                          capture_output=True, text=True, timeout=300)


def test_bench_layers_tiny(tmp_path):
    proc = run("bench/bench_layers.py", "--sizes", "64", "--rates", "0.5", "--repeats", "1",
               "--batch", "8", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "bench_layers.json").read_text())
    (row,) = result["rows"]
    assert (row["size"], row["rate"]) == (64, 0.5)
    assert set(row["ratio"]) == {"row_output", "row_input", "tile", "row_output_strided",
                                 "row_output_block", "row_input_strided", "row_input_block"}
    assert all(v > 0 for v in row["median_s"].values())
    # the second layer alone: stock fc2 + Dropout against fc2 skipping fc1's dropped inputs
    consumer = row["consumer"]
    assert consumer["stock_s"] > 0 and consumer["propagated_s"] > 0
    assert consumer["ratio"] == pytest.approx(consumer["stock_s"] / consumer["propagated_s"])
    assert (tmp_path / "bench_layers.png").stat().st_size > 0
    table = (tmp_path / "bench_layers.md").read_text().splitlines()
    assert table[6].startswith("| size | p | stock ms | ROW/OUTPUT | ROW/OUTPUT strided |")
    assert table[6].endswith("| TILE | consumer (fc2) | limit |")
    assert table[8].startswith("| 64 | 0.5 | ") and table[8].endswith(" | 2.00 |")


def test_bench_layers_chosen_variants_without_consumer(tmp_path):
    proc = run("bench/bench_layers.py", "--sizes", "32", "--rates", "0.7", "--repeats", "1",
               "--batch", "4", "--variants", "row_input_block", "--no-consumer",
               "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads((tmp_path / "bench_layers.json").read_text())["rows"]
    assert set(row["median_s"]) == {"stock_input", "row_input_block"}
    assert "consumer" not in row


def test_bench_mlp_tiny(tmp_path):
    # enough iterations for caffe time's millisecond total to be non-zero
    proc = run("bench/bench_mlp.py", "--hidden", "256", "--rate", "0.5", "--repeats", "1",
               "--iterations", "20", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "784-256-256-10" in proc.stdout
    result = json.loads((tmp_path / "bench_mlp.json").read_text())
    assert set(result["rows"][0]["ratio"]) == {"rdp", "rdp_s1", "rdp_block", "rdp_prop", "tdp",
                                               "tdp_s1_rowmajor"}
    table = (tmp_path / "bench_mlp.md").read_text()
    assert "| RDP, block, 2 slices (default at p > 0.5), propagated |" in table


def test_bench_mlp_rejects_unknown_method(tmp_path):
    proc = run("bench/bench_mlp.py", "--hidden", "64", "--methods", "rdp_sx",
               "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "unknown method 'rdp_sx'" in proc.stderr


def test_exp_mlp_rejects_unknown_method(tmp_path):
    proc = run("experiments/exp_mlp.py", "demo", "--methods", "rdp", "rdp_blocky",
               "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "unknown method 'rdp_blocky'" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_bench_rejects_bad_rate(tmp_path):
    proc = run("bench/bench_layers.py", "--rates", "1.0", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "every rate in [0, 1)" in proc.stderr


def test_search_table(tmp_path):
    proc = run("search_table.py", "--rates", "0.5", "0.8", "--max-dp", "4",
               "--json", str(tmp_path / "t.json"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[2].startswith("| bounded | 4 | 0.5 | 0.5000 | 0.000 | 2 (2.0) |")
    assert "error: dropout rate 0.8 cannot be reached" in lines[3]
    assert lines[4].startswith("| paper | 4 | 0.5 | 0.4970 |")
    records = json.loads((tmp_path / "t.json").read_text())
    assert [r["method"] for r in records] == ["bounded", "paper", "paper"]


def test_bench_lstm_tiny(tmp_path):
    proc = run("bench/bench_lstm.py", "--hidden", "32", "--vocab", "200", "--rates", "0.5",
               "--repeats", "1", "--iterations", "20", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "where the time goes at p = 0.5" in proc.stdout
    result = json.loads((tmp_path / "bench_lstm.json").read_text())
    (row,) = result["rows"]
    assert set(row["ratio"]) == {"row", "tile", "row_rec", "tile_rec"}
    assert row["bound_recurrent"] == pytest.approx(2.0)
    assert row["bound"] == pytest.approx(1 / (1 - 0.5 * result["gflop_reducible"] /
                                              (result["gflop_reducible"] +
                                               result["gflop_recurrent"])))
    assert (tmp_path / "bench_lstm.png").stat().st_size > 0


def test_exp_mlp_demo_runs_and_resumes(tmp_path):
    args = ("demo", "--iterations", "20", "--test-every", "10", "--test-iter", "2",
            "--out", str(tmp_path))
    proc = run("experiments/exp_mlp.py", *args)
    assert proc.returncode == 0, proc.stderr
    assert "0 of 2 runs already done" in proc.stdout
    assert "iteration 10/20" in proc.stdout  # progress lines
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["demo_784-2048-2048-10_p0.5_rdp_block_s1_s0_i20.json",
                    "demo_784-2048-2048-10_p0.5_stock_s0_i20.json"]
    record = json.loads((tmp_path / "runs" / runs[0]).read_text())
    assert record["command"].startswith("scripts/experiments/exp_mlp.py demo")
    assert [e["iteration"] for e in record["result"]["evaluations"]] == [10, 20]
    assert 0 <= record["result"]["final_accuracy"] <= 1
    assert (tmp_path / "mlp_demo-i20.png").stat().st_size > 0
    again = run("experiments/exp_mlp.py", *args)
    assert again.returncode == 0 and "2 of 2 runs already done" in again.stdout
    assert "RDP, block, 1 pattern/batch" in (tmp_path / "mlp_demo-i20.md").read_text()
    curves = (tmp_path / "mlp_demo-i20-curves.md").read_text().splitlines()
    assert curves[2] == "| model | p | method | seeds | 10 | 20 |"
    accuracy = 100 * record["result"]["evaluations"][1]["accuracy"]
    assert curves[-1].endswith(f"| {accuracy:.1f} |")  # rdp_block_s1's row: its seed's values


def test_exp_lstm_tiny(tmp_path):
    proc = run("experiments/exp_lstm.py", "--iterations", "2", "--evaluations", "1",
               "--valid-batches", "2", "--hidden", "32", "--rates", "0.5",
               "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "lstm_lm-i2.json").read_text())
    assert [r["method"] for r in summary["rows"]] == ["stock", "row", "tile"]
    assert all(r["final_perplexity"] > 1 for r in summary["rows"])
    assert (tmp_path / "lstm_lm-i2.png").stat().st_size > 0


def test_bench_train_tiny(tmp_path):
    # caffe train on a tiny MLP and on CaffeNet's real classifier head (from
    # Caffe's source, converted by approx-dropout convert) at batch 2
    proc = run("bench/bench_train.py", "--configs", "mlp", "caffenet", "--hidden", "64",
               "--rates", "0.7", "--caffenet-batches", "2", "--repeats", "1",
               "--warmup", "1", "--measure", "3", "--time-iterations", "2",
               "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "bench_train.json").read_text())
    mlp, head = result["rows"]
    assert mlp["config"] == "mlp 784-64-64-10 p=0.7"
    assert set(mlp["train_ratio"]) == {"stock", "stock_fused", "approx_stock", "approx",
                                       "approx_unwired"}
    assert all(ms > 0 for ms in mlp["train_median_ms"].values())
    # each variant ran the update it names
    log = mlp["update_log"]
    assert "Caffe's own update for this solver: approx_dropout_param" in log["stock"]
    assert "fused update: 0 parameter(s) cell by cell" in log["stock_fused"]
    assert "Caffe's own update for this solver: approx_dropout_param" in log["approx_stock"]
    assert "deferred update: 6 parameter(s) cell by cell" in log["approx"]
    assert head["net"] == "CaffeNet fc6-fc8" and head["batch"] == 2 and head["rate"] == 0.5
    assert head["converted"] == ["fc6 -> relu6 -> drop6", "fc7 -> relu7 -> drop7"]
    assert "deferred update: 4 parameter(s) cell by cell" in head["update_log"]["approx"]
    table = (tmp_path / "bench_train.md").read_text().splitlines()
    assert table[6].startswith("| net | batch | p | stock Caffe ms | stock net, fused update |")
    assert table[8].startswith("| 784-64-64-10 | 128 | 0.7 | ")
    assert table[9].startswith("| CaffeNet fc6-fc8 | 2 | 0.5 | ")


def test_bench_train_reads_both_glog_formats():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "bench_train", REPO / "scripts" / "bench" / "bench_train.py")
    bench_train = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench_train  # its dataclasses look themselves up
    try:
        spec.loader.exec_module(bench_train)
    finally:
        del sys.modules[spec.name]
    log = ("I1201 23:59:59.500000  42 solver.cpp:218] Iteration 3, loss = 2.3\n"
           "I20261202 00:00:00.250000  42 solver.cpp:239] Iteration 4 (1.3 iter/s, "
           "0.7s/1 iters), loss = 2.2\n"
           "I1202 00:00:00.300000  42 sgd_solver.cpp:106] Iteration 4, lr = 0.01\n")
    times = bench_train.iteration_times(log)
    assert set(times) == {3, 4}
    assert times[4] - times[3] == pytest.approx(0.75)  # across midnight
