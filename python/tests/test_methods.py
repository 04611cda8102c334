"""approx_dropout.methods: the experiments' and benchmarks' methods, one
meaning per name (MLP methods; LSTM LM methods shared by bench_lstm, exp_lstm
and the GPU bundle), and the meaning the committed results were recorded with."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format

from approx_dropout import methods
from approx_dropout.bundle import pack as bundle_pack
from approx_dropout.prototxt import nets
from conftest import REPO

RESULTS = REPO / "scripts" / "results"


def load_script(rel: str):
    """scripts/<rel> as a module (its main() not run)."""
    name = Path(rel).stem
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / rel)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


# ---- MLP methods ----------------------------------------------------------------

def test_methods_name_their_settings():
    # the methods of the committed results keep the layout they ran with
    # without _sS: 2 slices, what the results of "rdp" were recorded with
    assert methods.method_settings("rdp") == (
        "rdp", {"batch_slices": 2, "layout": "STRIDED"}, False, False)
    assert methods.method_settings("rdp_s8") == (
        "rdp", {"batch_slices": 8, "layout": "STRIDED"}, False, False)
    assert methods.method_settings("tdp_s1_rowmajor") == (
        "tdp", {"batch_slices": 1, "tile_order": "ROW_MAJOR"}, False, False)
    assert methods.method_settings("rdp_paper") == (
        "rdp", {"batch_slices": 1, "layout": "STRIDED"}, True, False)
    # TILE: no layout; tdp names the diagonal tiles it was recorded with
    assert methods.method_settings("tdp") == (
        "tdp", {"tile_order": "DIAGONAL", "batch_slices": 1}, False, False)
    assert methods.method_settings("tdp_s4").fields == {"tile_order": "DIAGONAL",
                                                         "batch_slices": 4}
    assert methods.method_settings("stock") == ("stock", {}, False, False)
    # the new ones
    assert methods.method_settings("rdp_block") == (
        "rdp", {"batch_slices": 2, "layout": "BLOCK"}, False, False)
    assert methods.method_settings("rdp_block_s4") == (
        "rdp", {"batch_slices": 4, "layout": "BLOCK"}, False, False)
    assert methods.method_settings("rdp_prop") == (
        "rdp", {"batch_slices": 2, "layout": "BLOCK"}, False, True)
    assert methods.method_settings("rdp_prop_s1").fields == {"batch_slices": 1,
                                                              "layout": "BLOCK"}
    assert methods.method_settings("rdp_strided_prop") == (
        "rdp", {"batch_slices": 2, "layout": "STRIDED"}, False, True)
    assert methods.method_settings("rdp_strided_prop").propagate
    assert methods.method_settings("tdp_blocks_s4") == (
        "tdp", {"tile_order": "BLOCKS", "batch_slices": 4}, False, False)
    assert methods.method_settings("tdp_blocks").fields["batch_slices"] == 1
    # the baselines of TDP
    assert methods.method_settings("dropconnect_tile") == (
        "dropconnect", {"drop_connect_unit": "DROP_CONNECT_TILE", "batch_slices": 1}, False,
        False)
    assert methods.method_settings("dropconnect_weight_s4").fields == {
        "drop_connect_unit": "DROP_CONNECT_WEIGHT", "batch_slices": 4}
    assert methods.method_settings("stock_input") == ("stock_input", {}, False, False)
    assert methods.method_settings("rdp_input") == (
        "rdp_input", {"batch_slices": 2, "layout": "BLOCK"}, False, False)
    assert methods.method_settings("rdp_input_s1").fields["batch_slices"] == 1
    for bad in ("dropconnect", "dropconnect_row", "dropconnect_tile_s0", "stock_input_s2",
                "rdp_input_prop", "rdp_input_block"):
        with pytest.raises(ValueError, match="unknown method"):
            methods.method_settings(bad)
    for bad in ("rdp_s0", "rdp_s", "tdp_sx", "bernoulli", "rdp_s01", "rdp_block_prop",
                "rdp_strided", "tdp_block", "tdp_prop", "rdp_prop_s", "rdp_paper_s2",
                "row", "row_rec"):  # LSTM methods are not MLP methods
        with pytest.raises(ValueError, match="unknown method"):
            methods.method_settings(bad)


def test_method_labels_say_layout_slices_and_propagation():
    label = methods.method_label
    assert label("stock") == "stock Dropout"
    assert label("rdp") == "RDP, strided, 2 slices (default at p > 0.5)"
    assert label("rdp_s1") == "RDP, strided, 1 pattern/batch (paper)"
    assert label("rdp_s4") == "RDP, strided, 4 slices"
    assert label("rdp_paper") == "RDP, strided, paper's dist., 1 pattern/batch"
    assert label("rdp_block") == "RDP, block, 2 slices (layer defaults at p > 0.5)"
    # "(paper)" only for the paper's settings: strided, one pattern per batch
    assert label("rdp_block_s1") == "RDP, block, 1 pattern/batch"
    assert label("rdp_prop") == "RDP, block, 2 slices (default at p > 0.5), propagated"
    assert label("rdp_prop_s4") == "RDP, block, 4 slices, propagated"
    assert label("rdp_strided_prop_s1") == "RDP, strided, 1 pattern/batch, propagated"
    assert label("tdp_s16") == "TDP, diagonal, 16 slices"
    assert label("tdp_s1_rowmajor") == "TDP, row-major, 1 pattern/batch (paper)"
    assert label("tdp_blocks_s4") == "TDP, blocks, 4 slices"
    assert label("tdp") == "TDP (default: diagonal, 1 pattern/batch)"
    assert label("tdp_blocks") == "TDP, blocks, 1 pattern/batch"
    assert label("dropconnect_tile") == "Bernoulli DropConnect, 32 x 32 tiles, 1 mask/batch"
    assert label("dropconnect_weight_s4") == "Bernoulli DropConnect, weights, 4 slices"
    assert label("rdp_input") == "RDP on the inputs, block, 2 slices"
    names = ["rdp", "rdp_s1", "rdp_s2", "rdp_paper", "rdp_block", "rdp_block_s1",
             "rdp_prop", "rdp_prop_s2", "rdp_strided_prop", "tdp", "tdp_s4",
             "tdp_s1_rowmajor", "tdp_blocks", "tdp_blocks_s2", "stock", "stock_input",
             "rdp_input", "dropconnect_tile",
             "dropconnect_tile_s4", "dropconnect_weight"]
    assert len({label(m) for m in names}) == len(names)
    for name in ("rdp_block", "rdp_prop", "rdp_strided_prop", "rdp_paper"):
        assert name in methods.METHOD_HELP


def test_mlp_methods_build_the_nets_flavours():
    for method in ("stock", "rdp", "rdp_paper", "rdp_prop_s3", "tdp", "tdp_s1_rowmajor"):
        assert methods.method_settings(method).flavour in nets.FLAVOURS
    for method in ("stock_input", "rdp_input_s3", "dropconnect_tile", "dropconnect_weight_s2"):
        assert methods.method_settings(method).flavour in nets.BASELINE_FLAVOURS
    for method in ("rdp", "rdp_block", "rdp_strided_prop_s2"):
        assert methods.method_settings(method).fields["layout"] in methods.RDP_LAYOUTS


# ---- LSTM LM methods ----------------------------------------------------------------

def test_every_lstm_method_has_one_label_and_one_settings_record():
    names = list(methods.LM_METHODS)
    assert names[:3] == ["stock", "row", "tile"]  # the summaries' row order
    records = [methods.lm_method_settings(n) for n in names]
    assert all(isinstance(r, methods.LMMethodSettings) for r in records)
    assert len(set(records)) == len(names)  # no two names for one setting
    labels = [methods.lm_method_label(n) for n in names]
    short = [methods.lm_method_label(n, short=True) for n in names]
    assert len(set(labels)) == len(set(short)) == len(names)
    for name, settings in zip(names, records):
        assert methods.LM_METHODS[name] == (settings, methods.lm_method_label(name),
                                            methods.lm_method_label(name, short=True))
        assert settings.flavour in nets.LM_FLAVOURS
        # recurrent dropout always names its pattern, never the layer's default
        assert (settings.recurrent_pattern in methods.RECURRENT_PATTERNS) == settings.recurrent
        assert settings.recurrent_pattern is None or settings.recurrent
        assert not (settings.recurrent and settings.flavour == "stock")
        assert f"{name}: {methods.lm_method_label(name)}" in methods.LM_METHOD_HELP
    for bad in ("rdp", "row_rec_step", "ROW", "tile_seq", ""):
        with pytest.raises(ValueError, match="unknown LSTM method"):
            methods.lm_method_settings(bad)
        with pytest.raises(ValueError, match="unknown LSTM method"):
            methods.lm_method_label(bad)


def test_lstm_methods_mean_what_their_results_were_recorded_with():
    settings = methods.lm_method_settings
    assert settings("stock") == ("stock", False, None)
    assert settings("row") == ("row", False, None)
    assert settings("tile") == ("tile", False, None)
    # bench_lstm recorded row_rec / tile_rec with the layer's default pattern
    # (PER_STEP), exp_lstm row_rec with PER_STEP named, row_rec_seq PER_SEQUENCE
    assert settings("row_rec") == ("row", True, "PER_STEP")
    assert settings("tile_rec") == ("tile", True, "PER_STEP")
    assert settings("row_rec_seq") == ("row", True, "PER_SEQUENCE")
    assert settings("row_rec").lm_options(0.3) == {
        "flavour": "row", "rate": 0.3, "recurrent": 0.3, "recurrent_pattern": "PER_STEP"}
    assert settings("tile").lm_options(0.7) == {
        "flavour": "tile", "rate": 0.7, "recurrent": 0.0, "recurrent_pattern": None}
    # every method name of a committed LSTM result is in the vocabulary, and
    # the committed summaries name it by its label
    runs = [json.loads(p.read_text())["run"]
            for p in sorted((RESULTS / "lstm_lm" / "runs").glob("*.json"))]
    assert {r["method"] for r in runs} == {"stock", "row", "tile", "row_rec", "row_rec_seq"}
    summary = (RESULTS / "lstm_lm" / "lstm_lm-i3880.md").read_text()
    for run in runs:
        if run["iterations"] == 3880:
            assert f"| {run['rate']:g} | {methods.lm_method_label(run['method'])} |" in summary
    bench = json.loads((RESULTS / "lstm_speed" / "bench_lstm.json").read_text())
    timed = list(bench["rows"][0]["median_ms"])
    assert timed == ["stock", "row", "tile", "row_rec", "tile_rec"]
    header = "| p | stock ms | " + " | ".join(
        methods.lm_method_label(m, short=True) for m in timed[1:]) + " |"
    assert header in (RESULTS / "lstm_speed" / "bench_lstm.md").read_text()


def test_bench_lstm_exp_lstm_and_the_bundle_accept_the_same_names():
    choices = []
    for script in ("bench/bench_lstm.py", "experiments/exp_lstm.py"):
        proc = subprocess.run([sys.executable, str(REPO / "scripts" / script),
                               "--methods", "row_recurrent"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "invalid choice: 'row_recurrent'" in proc.stderr
        choices.append(proc.stderr.split("(choose from ", 1)[1].split(")", 1)[0])
    assert choices[0] == choices[1]
    assert [c.strip(" '\"") for c in choices[0].split(",")] == list(methods.LM_METHODS)
    assert set(bundle_pack.LM_METHODS) <= set(methods.LM_METHODS)
    bench_lstm = load_script("bench/bench_lstm.py")
    assert set(bench_lstm.DEFAULT_METHODS) <= set(methods.LM_METHODS)


def dropout_settings(caffe_pb2, text: str) -> list[tuple]:
    """Per layer (data layers left out): name, type and its dropout settings;
    no sizes, so nets of different shapes compare."""
    net = text_format.Parse(text, caffe_pb2.NetParameter())
    return [(layer.name, layer.type,
             text_format.MessageToString(layer.approx_dropout_param, as_one_line=True)
             if layer.HasField("approx_dropout_param") else None,
             layer.dropout_param.dropout_ratio if layer.HasField("dropout_param") else None)
            for layer in net.layer if layer.type not in ("DummyData", "HDF5Data")]


def test_bench_lstm_exp_lstm_and_the_bundle_build_a_name_alike(caffe_pb2):
    bench_lstm = load_script("bench/bench_lstm.py")
    exp_lstm = load_script("experiments/exp_lstm.py")
    bundle = bundle_pack.benchmark_nets()
    enums = caffe_pb2.ApproxDropoutParameter
    rate = 0.5
    assert rate in bundle_pack.LM_RATES
    shape = dict(hidden=16, num_layers=2, batch=4, steps=3, vocab=50)
    for method, (settings, _, _) in methods.LM_METHODS.items():
        bench = dropout_settings(caffe_pb2, bench_lstm.method_net(method, rate, shape))
        exp = dropout_settings(caffe_pb2, exp_lstm.train_net(method, rate, 16, ("tr", "va")))
        assert bench == exp, method
        if method in bundle_pack.LM_METHODS:
            assert dropout_settings(caffe_pb2, bundle[f"lm_2x1500_p{rate:g}__{method}.prototxt"]) \
                == bench, method
        # and the net is what the record says
        net = text_format.Parse(bench_lstm.method_net(method, rate, shape),
                                caffe_pb2.NetParameter())
        lstms = [layer for layer in net.layer if layer.name.startswith("lstm")]
        assert [layer.type for layer in lstms] == \
            ["LSTM" if settings.flavour == "stock" else "ApproxDropoutLSTM"] * 2
        for layer in lstms:
            param = layer.approx_dropout_param
            assert param.recurrent_dropout_ratio == (rate if settings.recurrent else 0)
            assert param.HasField("recurrent_pattern") == settings.recurrent
            if settings.recurrent:
                assert enums.RecurrentPattern.Name(param.recurrent_pattern) == \
                    settings.recurrent_pattern
    # the test split's net: the method's flavour, no recurrent dropout (TEST phase)
    final = exp_lstm.final_test_net("row_rec", rate, 16, ("tr", "te"))
    assert final == nets.lm("row", hidden=16, rate=rate, batch=exp_lstm.STREAMS,
                            steps=exp_lstm.STEPS, vocab=exp_lstm.VOCAB, init=0.1,
                            sources=("tr", "te"))


def test_the_methods_module_needs_neither_protobuf_nor_the_nets():
    # pure Python, and no cycle: prototxt.nets imports methods, never the reverse
    code = ("import sys\nimport approx_dropout.methods\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('google', 'caffe')\n"
            "             or m.startswith('approx_dropout.prototxt')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
