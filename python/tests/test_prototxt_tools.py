"""apply / convert on the project's prototxts, checked by loading them in pycaffe."""
from __future__ import annotations

import re

import numpy as np
import pytest
from google.protobuf import text_format

from approx_dropout import files
from approx_dropout.harness import check as caffe_check
from approx_dropout.patterns.search import SearchError, bounded_search, paper_search
from approx_dropout.prototxt import convert, fill, rules
from approx_dropout.prototxt import io as prototxt_io
from approx_dropout.prototxt import shapes as net_shapes
from conftest import REPO

PROTOTXT = REPO / "prototxt"


def parse(caffe_pb2, text: str):
    return text_format.Parse(text, caffe_pb2.NetParameter())


def f32(values) -> list[float]:
    return np.asarray(values, dtype=np.float32).tolist()


@pytest.mark.parametrize("flavour", ["rdp", "tdp"])
def test_apply_fills_every_layer_and_the_net_trains(caffe, flavour, tmp_path):
    net = prototxt_io.read_net(PROTOTXT / f"mlp_bench_{flavour}.prototxt")
    filled = fill.fill_distributions(net)
    assert [f.name for f in filled] == ["fc1", "fc2"]
    want = f32(rules.trim(bounded_search(np.float32(0.7).item(), 16).distribution))
    for layer in net.layer:
        if layer.type == "ApproxDropoutInnerProduct":
            assert list(layer.approx_dropout_param.pattern_distribution) == want
    out = tmp_path / "net.prototxt"
    files.write_text_atomic(out, prototxt_io.net_to_text(net, "filled"))
    caffe.set_mode_cpu()
    loaded = caffe.Net(str(out), caffe.TRAIN)
    loaded.forward()
    loaded.backward()
    assert np.isfinite(loaded.blobs["loss"].data).all()


def test_apply_named_layer_only_and_paper_method(caffe_pb2):
    net = prototxt_io.read_net(PROTOTXT / "mlp_bench_rdp.prototxt")
    filled = fill.fill_distributions(net, ["fc2"], max_dp=64, method="paper")
    assert [f.name for f in filled] == ["fc2"]
    by_name = {layer.name: layer for layer in net.layer}
    assert len(by_name["fc1"].approx_dropout_param.pattern_distribution) == 0
    k = list(by_name["fc2"].approx_dropout_param.pattern_distribution)
    assert k == f32(paper_search(np.float32(0.7).item(), 64).distribution)
    assert any(w.startswith("bimodal") for w in filled[0].result.warnings)


def test_apply_caps_max_dp_at_num_output(caffe_pb2):
    net = parse(caffe_pb2, 'layer { name: "fc" type: "ApproxDropoutInnerProduct" '
                           'inner_product_param { num_output: 6 } '
                           'approx_dropout_param { dropout_ratio: 0.5 } }')
    filled = fill.fill_distributions(net, max_dp=16, method="paper")
    assert filled[0].max_dp == 6 and "capped at num_output 6" in filled[0].note
    assert len(net.layer[0].approx_dropout_param.pattern_distribution) == 6


@pytest.mark.parametrize("names,message", [
    (["nope"], "no layer named 'nope'"),
    (["relu1"], "layer 'relu1' is of type ReLU, not ApproxDropoutInnerProduct"),
])
def test_apply_bad_layer_names_leave_the_net_alone(caffe_pb2, names, message):
    net = prototxt_io.read_net(PROTOTXT / "mlp_bench_rdp.prototxt")
    before = net.SerializeToString()
    with pytest.raises(prototxt_io.PrototxtError, match=message):
        fill.fill_distributions(net, names)
    assert net.SerializeToString() == before


def test_apply_refuses_a_distribution_the_layer_would_refuse(caffe_pb2):
    # the paper's search misses 0.3 by 0.013 with N = 16 (entropy term)
    net = parse(caffe_pb2, 'layer { name: "fc" type: "ApproxDropoutInnerProduct" '
                           'inner_product_param { num_output: 64 } '
                           'approx_dropout_param { dropout_ratio: 0.3 } }')
    with pytest.raises(prototxt_io.PrototxtError, match="reached rate 0.3132"):
        fill.fill_distributions(net, method="paper")
    assert len(net.layer[0].approx_dropout_param.pattern_distribution) == 0


def test_apply_on_a_net_without_approx_layers(caffe_pb2):
    net = prototxt_io.read_net(PROTOTXT / "mlp_bench_stock.prototxt")
    with pytest.raises(prototxt_io.PrototxtError, match="has no ApproxDropoutInnerProduct"):
        fill.fill_distributions(net)


# ---- convert ----------------------------------------------------------------

def test_convert_the_stock_mlp(caffe_pb2):
    net = prototxt_io.read_net(PROTOTXT / "mlp_bench_stock.prototxt")
    before = net.SerializeToString()
    out, report = convert.convert_net(net)
    assert net.SerializeToString() == before
    assert report.converted == ["fc1 -> relu1 -> drop1", "fc2 -> relu2 -> drop2"]
    assert report.refused == []
    assert [(layer.name, layer.type) for layer in out.layer] == [
        ("data", "DummyData"), ("fc1", "ApproxDropoutInnerProduct"), ("relu1", "ReLU"),
        ("fc2", "ApproxDropoutInnerProduct"), ("relu2", "ReLU"),
        ("fc3", "InnerProduct"), ("loss", "SoftmaxWithLoss")]
    fc1 = out.layer[1]
    assert fc1.approx_dropout_param.dropout_ratio == pytest.approx(0.7)
    assert fc1.approx_dropout_param.pattern == caffe_pb2.ApproxDropoutParameter.ROW
    assert fc1.inner_product_param == net.layer[1].inner_product_param
    want = rules.trim(bounded_search(np.float32(0.7).item(), 16).distribution)
    assert list(fc1.approx_dropout_param.pattern_distribution) == f32(want)


@pytest.mark.parametrize("propagate", convert.PROPAGATE_MODES)
def test_converted_net_equals_the_original_in_test_phase(caffe, tmp_path, propagate):
    """Same weights (via a .caffemodel saved by the original), same outputs,
    whatever the wiring (propagate "all" changes the classifier's type too)."""
    caffe.set_mode_cpu()
    src = PROTOTXT / "mlp_bench_stock.prototxt"
    converted, _ = convert.convert_net(prototxt_io.read_net(src), propagate=propagate)
    conv_path = tmp_path / "converted.prototxt"
    conv_path.write_text(prototxt_io.net_to_text(converted))
    original = caffe.Net(str(src), caffe.TEST)
    weights = tmp_path / "stock.caffemodel"
    original.save(str(weights))
    approx = caffe.Net(str(conv_path), str(weights), caffe.TEST)
    data = np.random.default_rng(0).uniform(0, 1, original.blobs["data"].data.shape)
    for net in (original, approx):
        net.blobs["data"].data[...] = data
        net.forward(start="fc1")  # DummyData would refill "data"
    assert np.abs(original.blobs["fc3"].data).max() > 0
    np.testing.assert_allclose(approx.blobs["fc3"].data, original.blobs["fc3"].data,
                               rtol=1e-5, atol=1e-6)
    # and in TRAIN phase the converted net drops p = 0.7 of the neurons' outputs
    # (before the ReLU zeroes about half of the rest); the original ReLU alone: ~0.5
    train = caffe.Net(str(conv_path), str(weights), caffe.TRAIN)
    train.forward()
    assert (train.blobs["fc1"].data == 0).mean() > 0.75


CHAIN_HEAD = ('layer { name: "data" type: "Input" top: "data" '
              'input_param { shape { dim: 4 dim: 40 } } }\n'
              'layer { name: "fc1" type: "InnerProduct" bottom: "data" top: "fc1" '
              'inner_product_param { num_output: 64 } }\n')


def test_convert_non_in_place_chain_keeps_the_dropout_output_name(caffe, caffe_pb2, tmp_path):
    text = CHAIN_HEAD + (
        'layer { name: "relu1" type: "ReLU" bottom: "fc1" top: "r1" }\n'
        'layer { name: "drop1" type: "Dropout" bottom: "r1" top: "d1" '
        'dropout_param { dropout_ratio: 0.5 } }\n'
        'layer { name: "fc2" type: "InnerProduct" bottom: "d1" top: "fc2" '
        'inner_product_param { num_output: 3 } }\n')
    out, report = convert.convert_net(parse(caffe_pb2, text))
    assert report.converted == ["fc1 -> relu1 -> drop1"]
    relu = [layer for layer in out.layer if layer.name == "relu1"][0]
    assert list(relu.bottom) == ["fc1"] and list(relu.top) == ["d1"]
    path = tmp_path / "c.prototxt"
    path.write_text(prototxt_io.net_to_text(out))
    caffe.Net(str(path), caffe.TRAIN).forward()


def test_convert_inner_product_then_dropout_without_relu(caffe_pb2):
    text = CHAIN_HEAD + ('layer { name: "drop1" type: "Dropout" bottom: "fc1" top: "d1" '
                         'dropout_param { dropout_ratio: 0.3 } }\n')
    out, report = convert.convert_net(parse(caffe_pb2, text))
    assert report.converted == ["fc1 -> drop1"]
    assert [layer.name for layer in out.layer] == ["data", "fc1"]
    assert list(out.layer[1].top) == ["d1"]


def test_convert_tile_pattern(caffe_pb2):
    text = CHAIN_HEAD + ('layer { name: "drop1" type: "Dropout" bottom: "fc1" top: "fc1" }\n')
    out, report = convert.convert_net(parse(caffe_pb2, text), pattern="TILE")
    assert out.layer[1].approx_dropout_param.pattern == caffe_pb2.ApproxDropoutParameter.TILE
    narrow = text.replace("num_output: 64", "num_output: 16")
    out, report = convert.convert_net(parse(caffe_pb2, narrow), pattern="TILE")
    assert report.converted == [] and "tile_height" in report.refused[0][1]


@pytest.mark.parametrize("middle,reason", [
    ('layer { name: "act" type: "Sigmoid" bottom: "fc1" top: "fc1" }\n',
     "Sigmoid layer 'act' sits between InnerProduct 'fc1' and the dropout"),
    ('layer { name: "relu1" type: "ReLU" bottom: "fc1" top: "fc1" }\n'
     'layer { name: "peek" type: "Power" bottom: "fc1" top: "peek" }\n',
     "blob 'fc1' (output of 'relu1') is also read by peek"),
    ('layer { name: "peek" type: "Power" bottom: "fc1" top: "peek" }\n'
     'layer { name: "relu1" type: "ReLU" bottom: "fc1" top: "fc1" }\n',
     "blob 'fc1' (output of 'fc1') is also read by peek"),
    ('layer { name: "relu1" type: "ReLU" bottom: "fc1" top: "fc1" '
     'include { phase: TRAIN } }\n', "phase rules"),
])
def test_convert_refuses_unsafe_chains_with_the_reason(caffe_pb2, middle, reason):
    text = CHAIN_HEAD + middle + ('layer { name: "drop1" type: "Dropout" bottom: "fc1" '
                                  'top: "fc1" }\n')
    out, report = convert.convert_net(parse(caffe_pb2, text))
    assert report.converted == []
    assert report.refused[0][0] == "drop1" and reason in report.refused[0][1]
    assert out == parse(caffe_pb2, text)


def test_convert_leaves_dropout_after_other_layers_alone(caffe_pb2):
    text = ('layer { name: "data" type: "Input" top: "data" '
            'input_param { shape { dim: 4 dim: 3 dim: 8 dim: 8 } } }\n'
            'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
            'convolution_param { num_output: 4 kernel_size: 3 } }\n'
            'layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }\n'
            'layer { name: "drop" type: "Dropout" bottom: "conv" top: "conv" }\n')
    out, report = convert.convert_net(parse(caffe_pb2, text))
    assert report.refused == [("drop", "left alone: ReLU 'relu' reads Convolution layer "
                                       "'conv', not an InnerProduct")]


# ---- what the tools write loads in Caffe: dp capped at each layer's units -------

def input_layer(*dims: int, top: str = "x") -> str:
    shape = " ".join(f"dim: {d}" for d in dims)
    return (f'layer {{ name: "in_{top}" type: "DummyData" top: "{top}" dummy_data_param {{ '
            f'shape {{ {shape} }} data_filler {{ type: "gaussian" std: 1 }} }} }}\n')


def approx_ip(num_output: int, ratio: float, extra: str = "", bottom: str = "x") -> str:
    return (f'layer {{ name: "fc" type: "ApproxDropoutInnerProduct" bottom: "{bottom}" top: "y" '
            f'inner_product_param {{ num_output: {num_output} weight_filler {{ type: "xavier" }} }} '
            f'approx_dropout_param {{ dropout_ratio: {ratio} {extra} }} }}\n')


LOSS = ('layer { name: "loss" type: "Reduction" bottom: "y" top: "loss" loss_weight: 1 '
        'reduction_param { operation: SUMSQ } }\n')
LSTM_INPUT = ('layer { name: "in" type: "DummyData" top: "x" top: "cont" dummy_data_param { '
              'shape { dim: 3 dim: 2 dim: 6 } shape { dim: 3 dim: 2 } '
              'data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }\n')


def approx_lstm(ratio: float, extra: str = "", x: str = "x") -> str:
    return (f'layer {{ name: "fc" type: "ApproxDropoutLSTM" bottom: "{x}" bottom: "cont" top: "y" '
            f'recurrent_param {{ num_output: 5 weight_filler {{ type: "uniform" min: -0.1 max: 0.1 }} }} '
            f'approx_dropout_param {{ dropout_ratio: {ratio} {extra} }} }}\n')


# (id, net, method, units the pattern acts on): the search asks for dp <= 16,
# which each of these layers would refuse
APPLY_CASES = [
    ("row-output", input_layer(4, 10) + approx_ip(6, 0.5) + LOSS, "paper", 6),
    ("row-output-bounded-0.9", input_layer(4, 10) + approx_ip(12, 0.9) + LOSS, "bounded", 12),
    ("row-input", input_layer(4, 4) + approx_ip(32, 0.5, "side: INPUT") + LOSS, "paper", 4),
    ("row-input-4d", input_layer(2, 2, 1, 3) + approx_ip(32, 0.5, "side: INPUT") + LOSS,
     "paper", 6),
    ("tile", input_layer(3, 40) + approx_ip(40, 0.5, "pattern: TILE") + LOSS, "paper", 4),
    ("tile-small-tiles", input_layer(3, 24) + approx_ip(
        16, 0.5, "pattern: TILE tile_height: 8 tile_width: 8") + LOSS, "paper", 6),
    ("lstm-row", LSTM_INPUT + approx_lstm(0.5) + LOSS, "paper", 6),
    ("lstm-tile", LSTM_INPUT + approx_lstm(0.5, "pattern: TILE tile_height: 8 tile_width: 4")
     + LOSS, "paper", 6),
    ("lstm-after-embed",
     'layer { name: "words" type: "DummyData" top: "w" top: "cont" dummy_data_param { '
     'shape { dim: 3 dim: 2 } shape { dim: 3 dim: 2 } data_filler { type: "constant" value: 3 } '
     'data_filler { type: "constant" value: 1 } } }\n'
     'layer { name: "embed" type: "Embed" bottom: "w" top: "e" embed_param { num_output: 5 '
     'input_dim: 10 weight_filler { type: "uniform" min: -0.1 max: 0.1 } } }\n'
     + approx_lstm(0.5, x="e") + LOSS, "paper", 5),
]


def test_every_net_apply_writes_loads_in_caffe(caffe_pb2, tmp_path):
    jobs, names = [], []
    for name, text, method, units in APPLY_CASES:
        # gradients down to the input too, where Caffe can (not into an Embed's indices)
        net = parse(caffe_pb2, ("" if "Embed" in text else "force_backward: true\n") + text)
        (filled,) = fill.fill_distributions(net, method=method)
        assert filled.max_dp == units, name
        assert "capped at" in filled.note, name
        k = list(net.layer[-2].approx_dropout_param.pattern_distribution)
        assert 0 < len(k) <= units, (name, k)
        if method == "paper":
            assert len(k) == units, name  # the cap is what bounded the search
        out = tmp_path / f"{name}.prototxt"
        files.write_text_atomic(out, prototxt_io.net_to_text(net))
        jobs.append(caffe_check.Job(out.read_text()))
        names.append(name)
    outcomes = caffe_check.check_nets(jobs)
    for name, outcome in zip(names, outcomes):
        assert outcome.loaded and outcome.finite, (name, outcome.describe())


def convert_source(num_output: int, k: int, ratio: float = 0.5) -> str:
    return ("force_backward: true\n" + input_layer(4, k) +
            f'layer {{ name: "fc1" type: "InnerProduct" bottom: "x" top: "h" '
            f'inner_product_param {{ num_output: {num_output} weight_filler {{ type: "xavier" }} }} }}\n'
            'layer { name: "relu1" type: "ReLU" bottom: "h" top: "h" }\n'
            f'layer {{ name: "drop1" type: "Dropout" bottom: "h" top: "h" '
            f'dropout_param {{ dropout_ratio: {ratio} }} }}\n'
            'layer { name: "out" type: "InnerProduct" bottom: "h" top: "y" '
            'inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }\n' + LOSS)


@pytest.mark.parametrize("pattern,num_output,k,units", [
    ("ROW", 6, 10, 6), ("TILE", 40, 40, 4), ("TILE", 64, 33, 4)])
def test_every_net_convert_writes_loads_in_caffe(caffe_pb2, tmp_path, pattern, num_output,
                                                 k, units):
    out, report = convert.convert_net(parse(caffe_pb2, convert_source(num_output, k)),
                                              method="paper", pattern=pattern)
    assert report.converted == ["fc1 -> relu1 -> drop1"], report.refused
    assert report.filled[0].max_dp == units
    assert len(out.layer[1].approx_dropout_param.pattern_distribution) == units
    (outcome,) = caffe_check.check_nets([caffe_check.Job(prototxt_io.net_to_text(out))])
    assert outcome.loaded and outcome.finite, outcome.describe()


@pytest.mark.parametrize("text,message", [
    (input_layer(3, 20) + approx_ip(40, 0.5, "pattern: TILE"),
     "tile_width (32) is larger than the input size K (20)"),
    (input_layer(3, 40) + approx_ip(16, 0.5, "pattern: TILE"),
     "tile_height (32) is larger than the weight (num_output x K) matrix's 16 rows"),
    (input_layer(3, 40) + approx_ip(40, 0.5, "pattern: TILE side: INPUT"),
     "side: INPUT applies to pattern: ROW only"),
    (input_layer(3, 8) + approx_ip(64, 0.9, "side: INPUT"),
     "dropout_ratio 0.9 cannot be reached with dp <= 8, the layer's input size K "
     "(the largest rate is 0.875)"),
    (LSTM_INPUT + approx_lstm(0.5, "side: OUTPUT"), "ApproxDropoutLSTM always drops its input"),
    (LSTM_INPUT + approx_lstm(0.5, "pattern: TILE tile_height: 8"),
     "tile_width (32) is larger than the input size K (6)"),
    (LSTM_INPUT + approx_lstm(0.5, "pattern: TILE"),
     "tile_height (32) is larger than the input-to-gates (4 num_output x K) matrix's 20 rows"),
])
def test_apply_refuses_a_layer_caffe_would_refuse(caffe_pb2, text, message):
    net = parse(caffe_pb2, text)
    with pytest.raises(prototxt_io.PrototxtError, match=re.escape(message)):
        fill.fill_distributions(net)
    assert not net.layer[-1].approx_dropout_param.pattern_distribution  # untouched


HDF5_NET = ('layer { name: "data" type: "HDF5Data" top: "data" '
            'hdf5_data_param { source: "SOURCE" batch_size: 4 } }\n'
            + approx_ip(64, 0.5, "side: INPUT", bottom="data"))


def test_unknown_input_size_needs_an_explicit_max_dp(caffe_pb2, tmp_path):
    net = parse(caffe_pb2, HDF5_NET.replace("SOURCE", str(tmp_path / "missing.txt")))
    with pytest.raises(prototxt_io.PrototxtError,
                       match="dp must not exceed its input size K, and the input size of 'fc' "
                             "is unknown: HDF5Data layer 'data' .* pass --max-dp N"):
        fill.fill_distributions(net)
    (filled,) = fill.fill_distributions(net, max_dp=4)  # trusted when given
    assert filled.max_dp == 4 and "max dp 4 as given" in filled.note
    # a max dp no larger than what the layer surely has needs no input size
    tile = parse(caffe_pb2, HDF5_NET.replace("SOURCE", "missing.txt").replace(
        "side: INPUT", "pattern: TILE tile_height: 2 tile_width: 1"))
    (filled,) = fill.fill_distributions(tile)  # >= 32 tile rows
    assert filled.max_dp == 16 and filled.note == ""


def test_input_size_is_read_from_the_hdf5_files(caffe_pb2, tmp_path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "part0.h5", "w") as f:
        f["data"] = np.zeros((10, 2, 3), dtype=np.float32)
    (tmp_path / "list.txt").write_text("part0.h5\n")
    net = parse(caffe_pb2, HDF5_NET.replace("SOURCE", "list.txt"))
    (filled,) = fill.fill_distributions(net, method="paper", base=tmp_path)
    assert filled.max_dp == 6 and "capped at input size K 6" in filled.note


def test_convert_tile_needs_a_known_input_size(caffe_pb2):
    text = convert_source(64, 40).replace(input_layer(4, 40), (
        'layer { name: "in_x" type: "HDF5Data" top: "x" '
        'hdf5_data_param { source: "missing.txt" batch_size: 4 } }\n'))
    out, report = convert.convert_net(parse(caffe_pb2, text), pattern="TILE")
    assert report.converted == []
    assert "TILE needs tile_width <= the input size K" in report.refused[0][1]
    narrow = convert_source(64, 20)
    out, report = convert.convert_net(parse(caffe_pb2, narrow), pattern="TILE")
    assert report.converted == [] and "tile_width (32) is larger than the input size K (20)" \
        in report.refused[0][1]
    # ROW needs only num_output
    out, report = convert.convert_net(parse(caffe_pb2, text), pattern="ROW")
    assert report.converted == ["fc1 -> relu1 -> drop1"]


def test_inferred_shapes_match_caffe(caffe_pb2):
    """net_shapes against the shapes pycaffe itself gives a net's blobs."""
    text = (input_layer(2, 3, 11, 9) +
            'layer { name: "conv" type: "Convolution" bottom: "x" top: "c" convolution_param { '
            'num_output: 4 kernel_size: 3 stride: 2 pad: 1 weight_filler { type: "xavier" } } }\n'
            'layer { name: "pool" type: "Pooling" bottom: "c" top: "p" pooling_param { '
            'pool: MAX kernel_size: 3 stride: 2 } }\n'
            'layer { name: "pool2" type: "Pooling" bottom: "c" top: "p2" pooling_param { '
            'pool: AVE kernel_size: 2 stride: 2 pad: 1 } }\n'
            'layer { name: "flat" type: "Flatten" bottom: "p" top: "f" }\n'
            'layer { name: "re" type: "Reshape" bottom: "p2" top: "r" reshape_param { '
            'shape { dim: 0 dim: -1 dim: 2 } } }\n'
            'layer { name: "ip" type: "InnerProduct" bottom: "r" top: "i" inner_product_param { '
            'num_output: 5 axis: 2 weight_filler { type: "xavier" } } }\n'
            'layer { name: "cat" type: "Concat" bottom: "f" bottom: "f" top: "cat" }\n'
            'layer { name: "sl" type: "Slice" bottom: "cat" top: "s1" top: "s2" '
            'slice_param { slice_point: 7 } }\n'
            'layer { name: "relu" type: "ReLU" bottom: "s2" top: "s2" }\n')
    shapes = net_shapes.infer(parse(caffe_pb2, text), net_shapes.TEST)
    (outcome,) = caffe_check.check_nets([caffe_check.Job(text, phase="TEST", backward=False)])
    assert outcome.loaded, outcome.describe()
    named = {b for layer in parse(caffe_pb2, text).layer for b in layer.top}
    caffe_shapes = {b: tuple(s) for b, s in outcome.report["shapes"].items() if b in named}
    assert set(caffe_shapes) == named  # (Caffe's own split blobs left out)
    assert {b: shapes.blobs[b] for b in named} == caffe_shapes


# ---- NetSpec helpers: the same caps, from the NetSpec graph ------------------------

def test_netspec_caps_dp_at_the_input_size_and_the_net_loads(caffe):
    from approx_dropout.prototxt import netspec
    L = caffe.layers
    n = caffe.NetSpec()
    n.x = L.DummyData(shape=[dict(dim=[4, 5])], data_filler=[dict(type="gaussian")])
    n.fc1 = netspec.approx_dropout_inner_product(n.x, 32, 0.5, side="INPUT",
                                                 distribution="paper")
    with pytest.raises(SearchError, match="drops units with probability 0.4133"):
        # 2 x 1 tiles: the paper's search with N = 2 misses 0.5, which the layer refuses
        netspec.approx_dropout_inner_product(n.fc1, 40, 0.5, pattern="TILE",
                                             distribution="paper")
    n.fc2 = netspec.approx_dropout_inner_product(n.fc1, 40, 0.5, pattern="TILE")
    n.x2, n.cont = L.DummyData(shape=[dict(dim=[3, 2, 6]), dict(dim=[3, 2])],
                               data_filler=[dict(type="gaussian"),
                                            dict(type="constant", value=1)], ntop=2)
    n.h = netspec.approx_dropout_lstm(n.x2, n.cont, 5, 0.5, distribution="paper")
    n.loss = L.Reduction(n.fc2, loss_weight=1)
    n.loss2 = L.Reduction(n.h, loss_weight=1)
    proto = n.to_proto()
    k = {layer.name: len(layer.approx_dropout_param.pattern_distribution) for layer in proto.layer}
    assert (k["fc1"], k["fc2"], k["h"]) == (5, 2, 6)  # K = 5; 2 x 1 tiles of 40 x 32; K = 6
    (outcome,) = caffe_check.check_nets([caffe_check.Job(str(proto))])
    assert outcome.loaded and outcome.finite, outcome.describe()


def test_netspec_refuses_what_the_layer_would_refuse(caffe):
    from approx_dropout.prototxt import netspec
    L = caffe.layers
    n = caffe.NetSpec()
    n.x = L.DummyData(shape=[dict(dim=[4, 20])], data_filler=[dict(type="gaussian")])
    with pytest.raises(ValueError, match=re.escape("tile_width (32) is larger than the input "
                                                   "size K (20)")):
        netspec.approx_dropout_inner_product(n.x, 64, 0.5, pattern="TILE")
    with pytest.raises(ValueError, match="acts on only 20 units"):
        netspec.approx_dropout_inner_product(n.x, 64, 20 / 21, side="INPUT",
                                             distribution=[0.0] * 20 + [1.0])
    n.h5 = L.HDF5Data(hdf5_data_param=dict(source="no-such-list.txt", batch_size=2))
    with pytest.raises(ValueError, match="pass max_dp"):
        netspec.approx_dropout_inner_product(n.h5, 64, 0.5, side="INPUT")
    top = netspec.approx_dropout_inner_product(n.h5, 64, 0.5, side="INPUT", max_dp=3)
    layer = top.to_proto().layer[-1]
    assert len(layer.approx_dropout_param.pattern_distribution) <= 3


# ---- convert: pattern propagation --------------------------------------------

def test_convert_wires_consecutive_converted_layers(caffe_pb2):
    net = prototxt_io.read_net(PROTOTXT / "mlp_bench_stock.prototxt")
    out, report = convert.convert_net(net)  # propagate="converted" by default
    assert [w.describe() for w in report.wired] == ["wired fc1 -> fc2 (pattern fc1_pattern)"]
    assert report.wired[0].relu == "relu1" and not report.wired[0].skip_only
    assert report.not_wired == [] and report.could_skip == [("fc2", "fc3")]
    layers = {layer.name: layer for layer in out.layer}
    assert list(layers["fc1"].top) == ["fc1", "fc1_pattern"]
    assert list(layers["fc2"].bottom) == ["fc1", "fc1_pattern"]
    assert list(layers["fc2"].top) == ["fc2"]  # nobody reads fc2's pattern
    assert layers["fc3"].type == "InnerProduct" and list(layers["fc3"].bottom) == ["fc2"]
    off, report = convert.convert_net(net, propagate="off")
    assert report.wired == [] and report.could_skip == []
    assert all(len(layer.top) <= 2 and "_pattern" not in "".join(layer.top) + "".join(
        layer.bottom) for layer in off.layer)
    with pytest.raises(prototxt_io.PrototxtError, match="propagate must be one of"):
        convert.convert_net(net, propagate="some")


def test_convert_all_makes_the_classifier_skip(caffe_pb2):
    net = prototxt_io.read_net(PROTOTXT / "mlp_bench_stock.prototxt")
    out, report = convert.convert_net(net, propagate="all")
    assert [w.describe() for w in report.wired] == [
        "wired fc1 -> fc2 (pattern fc1_pattern)",
        "wired fc2 -> fc3 (pattern fc2_pattern); fc3 is now an ApproxDropoutInnerProduct "
        "with dropout_ratio 0 that only skips"]
    fc3 = [layer for layer in out.layer if layer.name == "fc3"][0]
    original = [layer for layer in net.layer if layer.name == "fc3"][0]
    assert fc3.type == "ApproxDropoutInnerProduct"
    assert list(fc3.bottom) == ["fc2", "fc2_pattern"] and list(fc3.top) == ["fc3"]
    assert fc3.approx_dropout_param.dropout_ratio == 0
    assert fc3.approx_dropout_param.pattern == caffe_pb2.ApproxDropoutParameter.ROW
    assert not fc3.approx_dropout_param.pattern_distribution  # p = 0: the layer's dp = 1
    assert fc3.inner_product_param == original.inner_product_param
    assert report.converted == ["fc1 -> relu1 -> drop1", "fc2 -> relu2 -> drop2"]


def test_converted_wired_net_computes_what_the_unwired_one_does(caffe_pb2):
    """Same seed: the wired nets' losses and gradients are the unwired net's."""
    net = parse(caffe_pb2, convert_source(48, 30, 0.5).replace(
        'layer { name: "out"',
        'layer { name: "fc2" type: "InnerProduct" bottom: "h" top: "h2" '
        'inner_product_param { num_output: 40 weight_filler { type: "xavier" } } }\n'
        'layer { name: "relu2" type: "ReLU" bottom: "h2" top: "h2" }\n'
        'layer { name: "drop2" type: "Dropout" bottom: "h2" top: "h2" '
        'dropout_param { dropout_ratio: 0.7 } }\n'
        'layer { name: "out"').replace('bottom: "h" top: "y"', 'bottom: "h2" top: "y"'))
    texts = {}
    for mode in convert.PROPAGATE_MODES:
        out, report = convert.convert_net(net, propagate=mode)
        assert len(report.wired) == {"off": 0, "converted": 1, "all": 2}[mode]
        texts[mode] = prototxt_io.net_to_text(out)
    outcomes = caffe_check.check_nets([caffe_check.Job(texts[mode], iterations=3, seed=11,
                                                       values=True)
                                       for mode in ("off", "converted")]
                                      + [caffe_check.Job(texts[mode], iterations=1, seed=11,
                                                         values=True)
                                         for mode in ("off", "all")])
    for outcome in outcomes:
        assert outcome.loaded and outcome.finite, outcome.describe()

    def same(a, b):
        for step_a, step_b in zip(a.report["outputs"], b.report["outputs"]):
            np.testing.assert_allclose(step_a["loss"], step_b["loss"], rtol=1e-4)
        for name, diff in a.report["param_diffs"].items():
            np.testing.assert_allclose(diff, b.report["param_diffs"][name], rtol=1e-4,
                                       atol=1e-6, err_msg=name)
    same(outcomes[0], outcomes[1])
    same(outcomes[2], outcomes[3])  # one pass: "all"'s skipping classifier draws last


def wiring_source(middle: str, reader: str = "h1", extra: str = "") -> str:
    """fc1 -> drop1 -> MIDDLE -> fc2 -> relu2 -> drop2 -> EXTRA, fc2 reading `reader`."""
    return (input_layer(4, 20) +
            'layer { name: "fc1" type: "InnerProduct" bottom: "x" top: "h1" '
            'inner_product_param { num_output: 16 } }\n'
            'layer { name: "drop1" type: "Dropout" bottom: "h1" top: "h1" }\n' + middle +
            f'layer {{ name: "fc2" type: "InnerProduct" bottom: "{reader}" top: "h2" '
            'inner_product_param { num_output: 8 } }\n'
            'layer { name: "relu2" type: "ReLU" bottom: "h2" top: "h2" }\n'
            'layer { name: "drop2" type: "Dropout" bottom: "h2" top: "h2" }\n' + extra)


RELU = 'layer { name: "relu1" type: "ReLU" bottom: "h1" top: "h1" }\n'


@pytest.mark.parametrize("middle,reader,extra,reason", [
    ('layer { name: "act" type: "Sigmoid" bottom: "h1" top: "h1" }\n', "h1", "",
     "Sigmoid layer 'act' sits between them; only one ReLU may"),
    (RELU + 'layer { name: "act" type: "TanH" bottom: "h1" top: "h1" }\n', "h1", "",
     "ReLU layer 'relu1', TanH layer 'act' sit between them"),
    (RELU + 'layer { name: "r" type: "ReLU" bottom: "h1" top: "r" }\n', "r", "",
     "ReLU layer 'relu1', ReLU layer 'r' sit between them"),
    ('layer { name: "r" type: "ReLU" bottom: "h1" top: "r" include { phase: TRAIN } }\n', "r",
     "", "layer 'r' has include/exclude phase rules"),
    # a later layer rewriting fc2's input in place: fc2's weight gradient would
    # read its values, no longer the zeros fc2 skipped
    (RELU, "h1", 'layer { name: "shift" type: "Power" bottom: "h1" top: "h1" '
     'power_param { shift: 1 } }\n',
     "shift rewrites blob 'h1' in place after 'fc2' reads it"),
])
def test_convert_does_not_wire_with_other_layers_between(caffe_pb2, middle, reader, extra,
                                                         reason):
    out, report = convert.convert_net(parse(caffe_pb2, wiring_source(middle, reader,
                                                                             extra)))
    assert report.converted == ["fc1 -> drop1", "fc2 -> relu2 -> drop2"]
    assert report.wired == []
    assert [(p, c) for p, c, _ in report.not_wired] == [("fc1", "fc2")]
    assert reason in report.not_wired[0][2]
    assert not any("_pattern" in "".join(layer.top) for layer in out.layer)


def test_convert_wires_through_a_relu_not_in_place_and_beside_other_readers(caffe_pb2):
    # fc2 reads exactly fc1's output through one ReLU; another layer reading the
    # same values changes nothing of what fc2 sees
    text = wiring_source('layer { name: "r" type: "ReLU" bottom: "h1" top: "r" }\n'
                         'layer { name: "peek" type: "Power" bottom: "r" top: "peek" }\n',
                         "r")
    out, report = convert.convert_net(parse(caffe_pb2, text))
    assert [(w.producer, w.consumer, w.relu) for w in report.wired] == [("fc1", "fc2", "r")]
    # in place, in the chain (InnerProduct -> ReLU -> Dropout), and with no ReLU at all
    for middle, relu in ((RELU, "relu1"), ("", None)):
        text = wiring_source("").replace(
            'layer { name: "drop1"', middle + 'layer { name: "drop1"')
        out, report = convert.convert_net(parse(caffe_pb2, text))
        assert [(w.producer, w.consumer, w.relu) for w in report.wired] == [("fc1", "fc2", relu)]


def test_convert_does_not_wire_a_layer_that_drops_nothing(caffe_pb2):
    text = wiring_source(RELU).replace('name: "drop1" type: "Dropout" bottom: "h1" top: "h1"',
                                       'name: "drop1" type: "Dropout" bottom: "h1" top: "h1" '
                                       'dropout_param { dropout_ratio: 0 }')
    out, report = convert.convert_net(parse(caffe_pb2, text))
    assert report.converted == ["fc1 -> drop1", "fc2 -> relu2 -> drop2"]
    assert report.not_wired == [("fc1", "fc2", "'fc1' has dropout_ratio 0: it drops no output "
                                                "for the next to skip")]


def test_convert_pattern_names_avoid_every_blob(caffe_pb2):
    text = wiring_source(RELU, "h1", 'layer { name: "a" type: "Power" bottom: "h2" '
                                   'top: "fc1_pattern" }\n'
                                   'layer { name: "b" type: "Power" bottom: "h2" '
                                   'top: "fc1_pattern1" }\n')
    out, report = convert.convert_net(parse(caffe_pb2, text))
    assert [w.pattern for w in report.wired] == ["fc1_pattern2"]
    fc1 = [layer for layer in out.layer if layer.name == "fc1"][0]
    assert list(fc1.top) == ["h1", "fc1_pattern2"]


def test_convert_one_pattern_feeds_two_consumers(caffe_pb2):
    text = wiring_source(RELU, "h1", 'layer { name: "fc3" type: "InnerProduct" bottom: "h1" '
                                   'top: "h3" inner_product_param { num_output: 5 } }\n'
                                   'layer { name: "drop3" type: "Dropout" bottom: "h3" '
                                   'top: "h3" }\n')
    out, report = convert.convert_net(parse(caffe_pb2, text))
    assert [(w.consumer, w.pattern) for w in report.wired] == [("fc2", "fc1_pattern"),
                                                               ("fc3", "fc1_pattern")]
    assert [list(layer.top) for layer in out.layer if layer.name == "fc1"] == [
        ["h1", "fc1_pattern"]]


def test_convert_tile_is_never_wired(caffe_pb2):
    # TILE drops weight tiles, never a whole unit: no input column is zero to skip
    out, report = convert.convert_net(parse(caffe_pb2, convert_source(64, 40)),
                                              pattern="TILE",
                                              propagate="all")
    assert report.converted == ["fc1 -> relu1 -> drop1"]
    assert report.wired == [] and report.not_wired == [] and report.could_skip == []


def test_apply_and_shapes_of_layers_with_a_pattern_bottom(caffe_pb2):
    net = prototxt_io.read_net(PROTOTXT / "mlp_bench_rdp_propagated.prototxt")
    filled = fill.fill_distributions(net)
    assert [(f.name, f.max_dp) for f in filled] == [("fc1", 16), ("fc2", 16), ("fc3", 10)]
    assert list(net.layer[-2].approx_dropout_param.pattern_distribution) == [1.0]
    for phase in (net_shapes.TRAIN, net_shapes.TEST):
        shapes = net_shapes.infer(net, phase)
        assert shapes.blobs["fc1_pattern"] == shapes.blobs["fc2_pattern"] == (2, 4)
        assert shapes.blobs["fc3"] == (128, 10)
    # slices: set; unset (its own default, 1 at p = 0.5, even under a producer
    # with 3); TILE's default
    text = (input_layer(4, 20) + approx_ip(16, 0.5, "batch_slices: 3").replace(
        'top: "y"', 'top: "y" top: "y_pattern"') +
        'layer { name: "c" type: "ApproxDropoutInnerProduct" bottom: "y" bottom: "y_pattern" '
        'top: "z" top: "z_pattern" inner_product_param { num_output: 8 } }\n'
        'layer { name: "t" type: "ApproxDropoutInnerProduct" bottom: "z" top: "w" '
        'top: "w_pattern" inner_product_param { num_output: 40 } '
        'approx_dropout_param { pattern: TILE tile_height: 4 tile_width: 4 } }\n')
    shapes = net_shapes.infer(parse(caffe_pb2, text), net_shapes.TRAIN)
    assert (shapes.blobs["y_pattern"], shapes.blobs["z_pattern"], shapes.blobs["w_pattern"]) \
        == ((3, 4), (1, 4), (1, 4))
    assert shapes.blobs["w"] == (4, 40)


@pytest.mark.parametrize("text,message", [
    (input_layer(3, 40) + approx_ip(40, 0.5, "pattern: TILE layout: BLOCK"),
     "approx_dropout_param.layout applies to pattern: ROW only"),
    (input_layer(3, 40) + approx_ip(40, 0.5, "recurrent_dropout_ratio: 0.2"),
     "approx_dropout_param.recurrent_dropout_ratio applies to ApproxDropoutLSTM only"),
    (input_layer(3, 40) + approx_ip(40, 0.5, "recurrent_pattern: PER_SEQUENCE"),
     "approx_dropout_param.recurrent_pattern applies to ApproxDropoutLSTM only"),
    (input_layer(3, 40) + approx_ip(40, 0.5, "recurrent_pattern_distribution: 1"),
     "approx_dropout_param.recurrent_pattern_distribution applies to ApproxDropoutLSTM only"),
    (LSTM_INPUT + approx_lstm(0.5, "recurrent_dropout_ratio: 1"),
     "approx_dropout_param.recurrent_dropout_ratio must be in [0, 1), got 1"),
    (input_layer(3, 40) + approx_ip(40, 0.5, "drop_connect_unit: DROP_CONNECT_WEIGHT"),
     "approx_dropout_param.drop_connect_unit applies to DropConnectInnerProduct only"),
])
def test_apply_refuses_fields_the_layer_refuses(caffe_pb2, text, message):
    with pytest.raises(prototxt_io.PrototxtError, match=re.escape(message)):
        fill.fill_distributions(parse(caffe_pb2, text))


def test_apply_accepts_the_new_fields_where_they_apply(caffe_pb2):
    for text in (input_layer(3, 40) + approx_ip(40, 0.5, "layout: STRIDED side: INPUT"),
                 LSTM_INPUT + approx_lstm(0.5, "layout: BLOCK recurrent_dropout_ratio: 0.3 "
                                               "recurrent_pattern: PER_SEQUENCE")):
        (filled,) = fill.fill_distributions(parse(caffe_pb2, text))
        assert filled.result.rate == pytest.approx(0.5)


MC_TAIL = ('layer { name: "relu1" type: "ReLU" bottom: "fc1" top: "fc1" }\n'
           'layer { name: "drop1" type: "Dropout" bottom: "fc1" top: "fc1" DROP1 '
           'dropout_param { dropout_ratio: 0.5 } }\n'
           'layer { name: "fc2" type: "InnerProduct" bottom: "fc1" top: "fc2" FC2 '
           'inner_product_param { num_output: 8 } }\n'
           'layer { name: "relu2" type: "ReLU" bottom: "fc2" top: "fc2" }\n'
           'layer { name: "drop2" type: "Dropout" bottom: "fc2" top: "fc2" '
           'dropout_param { dropout_ratio: 0.5 } }\n')


def _converted_layers(caffe, caffe_pb2, tmp_path, text):
    """convert's output for text, its report, and its layers by name; the
    output loads in Caffe in both phases."""
    out, report = convert.convert_net(parse(caffe_pb2, text))
    path = tmp_path / "converted.prototxt"
    path.write_text(prototxt_io.net_to_text(out))
    for phase in (caffe.TRAIN, caffe.TEST):
        caffe.Net(str(path), phase).forward()
    return report, {layer.name: layer for layer in out.layer}


def test_convert_keeps_the_dropouts_phase(caffe, caffe_pb2, tmp_path):
    # MC dropout: a Dropout with phase: TRAIN drops at test time too, and so
    # must the converted layer; an InnerProduct's own phase (which changed
    # nothing) goes. Producer and consumer then differ in phase and are wired
    # all the same (the consumer skips what the producer dropped, whatever
    # phase each runs in: the layer's gtest TestWiredNetEqualsUnwired).
    text = (CHAIN_HEAD.replace('top: "fc1" ', 'top: "fc1" phase: TEST ', 1)
            + MC_TAIL.replace("DROP1", "phase: TRAIN").replace("FC2", ""))
    report, layers = _converted_layers(caffe, caffe_pb2, tmp_path, text)
    assert report.converted == ["fc1 -> relu1 -> drop1", "fc2 -> relu2 -> drop2"]
    assert layers["fc1"].HasField("phase") and layers["fc1"].phase == caffe_pb2.TRAIN
    assert not layers["fc2"].HasField("phase")
    assert [(w.producer, w.consumer) for w in report.wired] == [("fc1", "fc2")]
    assert report.not_wired == []


def test_wiring_keeps_one_loss_weight_per_top_and_propagate_down_per_bottom(
        caffe, caffe_pb2, tmp_path):
    # Caffe refuses a layer whose loss_weight or propagate_down entries do not
    # match its tops or bottoms; the pattern top and bottom get theirs.
    text = (CHAIN_HEAD.replace('top: "fc1" ', 'top: "fc1" loss_weight: 0 ', 1)
            + MC_TAIL.replace("DROP1", "").replace("FC2", "propagate_down: true"))
    report, layers = _converted_layers(caffe, caffe_pb2, tmp_path, text)
    assert [(w.producer, w.consumer) for w in report.wired] == [("fc1", "fc2")]
    assert list(layers["fc1"].top) == ["fc1", "fc1_pattern"]
    assert list(layers["fc1"].loss_weight) == [0, 0]
    assert list(layers["fc2"].bottom) == ["fc1", "fc1_pattern"]
    assert list(layers["fc2"].propagate_down) == [True, False]


# ---- convert: Dropout in front of an InnerProduct (its input side) -----------

POOL_HEAD = ('layer { name: "data" type: "Input" top: "data" '
             'input_param { shape { dim: 4 dim: 8 dim: 6 dim: 6 } } }\n'
             'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" '
             'pooling_param { pool: AVE kernel_size: 3 stride: 3 } }\n')


@pytest.mark.parametrize("in_place", [True, False])
def test_convert_dropout_before_an_inner_product_drops_its_input(caffe, caffe_pb2, tmp_path,
                                                               in_place):
    # GoogLeNet's head: Pooling -> Dropout -> InnerProduct
    drop_top = "pool" if in_place else "pool_drop"
    text = POOL_HEAD + (
        f'layer {{ name: "drop" type: "Dropout" bottom: "pool" top: "{drop_top}" '
        f'dropout_param {{ dropout_ratio: 0.4 }} }}\n'
        f'layer {{ name: "fc" type: "InnerProduct" bottom: "{drop_top}" top: "fc" '
        f'inner_product_param {{ num_output: 5 weight_filler {{ type: "xavier" }} }} }}\n')
    out, report = convert.convert_net(parse(caffe_pb2, text))
    assert report.converted == ["drop -> fc (side: INPUT)"] and report.refused == []
    assert [layer.name for layer in out.layer] == ["data", "pool", "fc"]
    fc = out.layer[2]
    assert fc.type == "ApproxDropoutInnerProduct" and list(fc.bottom) == ["pool"]
    param = fc.approx_dropout_param
    assert param.side == caffe_pb2.ApproxDropoutParameter.INPUT
    assert param.dropout_ratio == pytest.approx(0.4)
    assert len(param.pattern_distribution) <= 32  # K = 8 x 2 x 2
    # TEST: the InnerProduct itself (same weights, same numbers)
    paths = [tmp_path / "original.prototxt", tmp_path / "converted.prototxt"]
    paths[0].write_text(text)
    paths[1].write_text(prototxt_io.net_to_text(out))
    caffe.set_mode_cpu()
    nets = [caffe.Net(str(p), caffe.TEST) for p in paths]
    nets[1].params["fc"][0].data[...] = nets[0].params["fc"][0].data
    data = np.random.default_rng(1).normal(size=nets[0].blobs["data"].data.shape)
    for net in nets:
        net.blobs["data"].data[...] = data
        net.forward()
    np.testing.assert_allclose(nets[1].blobs["fc"].data, nets[0].blobs["fc"].data,
                               rtol=1e-5, atol=1e-6)
    train = caffe.Net(str(paths[1]), caffe.TRAIN)
    train.forward()
    train.backward()


def test_convert_input_side_refusals_say_why(caffe_pb2):
    fc = ('layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" '
          'inner_product_param { num_output: 5 } }\n')
    drop = 'layer { name: "drop" type: "Dropout" bottom: "pool" top: "pool" }\n'
    # read by two layers: dropping one's input alone would change the other's
    text = POOL_HEAD + drop + fc + fc.replace('name: "fc"', 'name: "fc_b"').replace(
        'top: "fc"', 'top: "fc_b"')
    _, report = convert.convert_net(parse(caffe_pb2, text))
    ((name, why),) = report.refused
    assert name == "drop" and "left alone: its input comes from Pooling layer 'pool'" in why
    assert "as the input of the InnerProduct reading it: its output 'pool' is read by fc, fc_b" \
        in why
    # an InnerProduct that already drops its outputs keeps the Dropout in front
    text = POOL_HEAD + drop + fc + ('layer { name: "relu" type: "ReLU" bottom: "fc" top: "fc" }\n'
                                    'layer { name: "drop2" type: "Dropout" bottom: "fc" '
                                    'top: "fc" }\n')
    out, report = convert.convert_net(parse(caffe_pb2, text))
    assert report.converted == ["fc -> relu -> drop2"]
    assert "'fc' reads it but already drops its own outputs" in report.refused[0][1]
    assert [layer.name for layer in out.layer] == ["data", "pool", "drop", "fc", "relu"]
    # a Dropout no InnerProduct reads: the output-side reason alone
    _, report = convert.convert_net(parse(caffe_pb2, POOL_HEAD + drop))
    assert report.refused == [("drop", "left alone: its input comes from Pooling layer 'pool'")]


def test_convert_input_side_layer_is_neither_producer_nor_consumer(caffe_pb2):
    text = CHAIN_HEAD + (
        'layer { name: "relu1" type: "ReLU" bottom: "fc1" top: "fc1" }\n'
        'layer { name: "drop1" type: "Dropout" bottom: "fc1" top: "fc1" }\n'
        'layer { name: "tanh" type: "TanH" bottom: "fc1" top: "t" }\n'
        'layer { name: "drop2" type: "Dropout" bottom: "t" top: "t" }\n'
        'layer { name: "fc2" type: "InnerProduct" bottom: "t" top: "fc2" '
        'inner_product_param { num_output: 8 } }\n')
    out, report = convert.convert_net(parse(caffe_pb2, text), propagate="all")
    assert report.converted == ["fc1 -> relu1 -> drop1", "drop2 -> fc2 (side: INPUT)"]
    assert report.wired == []
    by_name = {layer.name: layer for layer in out.layer}
    assert list(by_name["fc2"].bottom) == ["t"] and len(by_name["fc1"].top) == 1


# ---- shapes of data layers: what the prototxt gives --------------------------

DATA_NET = (
    'layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN } '
    'transform_param { crop_size: 27 } data_param { source: "no-db" batch_size: 8 } }\n'
    'layer { name: "data" type: "ImageData" top: "data" top: "label" include { phase: TEST } '
    'transform_param { mirror: false } '
    'image_data_param { source: "list.txt" batch_size: 5 new_height: 29 new_width: 29 } }\n'
    'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
    'convolution_param { num_output: 6 kernel_size: 5 stride: 2 } }\n'
    'layer { name: "fc6" type: "InnerProduct" bottom: "conv" top: "fc6" '
    'inner_product_param { num_output: 64 } }\n'
    'layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }\n'
    'layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" }\n'
    'layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7" '
    'inner_product_param { num_output: 40 } }\n'
    'layer { name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }\n'
    'layer { name: "drop7" type: "Dropout" bottom: "fc7" top: "fc7" }\n'
    'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc7" bottom: "label" top: "loss" }\n')


def test_data_layer_shapes_come_from_crop_and_resize(caffe_pb2):
    net = parse(caffe_pb2, DATA_NET)
    train = net_shapes.infer(net, net_shapes.TRAIN)
    unknown = net_shapes.UNKNOWN
    assert train.blobs["data"] == (8, unknown, 27, 27) and train.blobs["label"] == (8,)
    assert "reads its channels from its database" in train.reason["data"]
    assert train.blobs["conv"] == (8, 6, 12, 12) and "conv" not in train.reason
    test = net_shapes.infer(net, net_shapes.TEST)
    assert test.blobs["data"] == (5, 3, 29, 29) and test.blobs["conv"] == (5, 6, 13, 13)
    # an InnerProduct's output size is its num_output, whatever its input
    no_crop = parse(caffe_pb2, DATA_NET.replace("crop_size: 27", "mirror: true"))
    shapes = net_shapes.infer(no_crop, net_shapes.TRAIN)
    assert shapes.blobs["conv"] == (8, 6, unknown, unknown)
    assert shapes.blobs["fc6"] == (8, 64)  # batch and num_output known
    assert shapes.blobs["fc7"] == (8, 40)


def test_convert_tile_on_a_train_val_net(caffe_pb2):
    """fc6's input from crop_size; fc7's from fc6's num_output."""
    out, report = convert.convert_net(parse(caffe_pb2, DATA_NET.replace("64", "96")),
                                      pattern="TILE")
    assert report.converted == ["fc6 -> relu6 -> drop6", "fc7 -> relu7 -> drop7"]
    no_crop = DATA_NET.replace("crop_size: 27", "mirror: true").replace(
        "num_output: 64", "num_output: 96")
    _, report = convert.convert_net(parse(caffe_pb2, no_crop), pattern="TILE")
    assert report.converted == ["fc7 -> relu7 -> drop7"]
    assert "reads its image shape from its database" in report.refused[0][1]


def test_data_as_inputs_sets_a_train_val_net_up_without_its_data(caffe, caffe_pb2, tmp_path):
    net = parse(caffe_pb2, DATA_NET)
    for phase, shape in ((net_shapes.TRAIN, [8, 3, 27, 27]), (net_shapes.TEST, [5, 3, 29, 29])):
        swapped = net_shapes.data_as_inputs(net, phase)
        layer = [x for x in swapped.layer if x.name == "data" and net_shapes.included(x, phase)]
        assert layer[0].type == "Input" and list(layer[0].input_param.shape[0].dim) == shape
        assert list(layer[0].top) == ["data", "label"]
        path = tmp_path / f"swapped{phase}.prototxt"
        path.write_text(prototxt_io.net_to_text(swapped))
        loaded = caffe.Net(str(path), phase)
        assert list(loaded.blobs["data"].data.shape) == shape
    mean = parse(caffe_pb2, DATA_NET.replace("crop_size: 27", "crop_size: 27 mean_value: 1 "
                                                               "mean_value: 2"))
    assert list(net_shapes.data_as_inputs(mean, net_shapes.TRAIN).layer[0]
                .input_param.shape[0].dim) == [8, 2, 27, 27]
    no_crop = parse(caffe_pb2, DATA_NET.replace("crop_size: 27", "mirror: true"))
    with pytest.raises(prototxt_io.PrototxtError, match="data layer 'data': the shape of top "
                                                        "'data' is unknown"):
        net_shapes.data_as_inputs(no_crop, net_shapes.TRAIN)


# ---- NetSpec helper: a drop-in for L.InnerProduct ----------------------------

def test_netspec_helper_takes_what_inner_product_takes(caffe):
    from approx_dropout.prototxt import netspec
    L = caffe.layers
    # CaffeNet's fc6, as examples/pycaffe/caffenet.py writes it
    kwargs = dict(weight_filler=dict(type="gaussian", std=0.005),
                  bias_filler=dict(type="constant", value=0.1),
                  param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)])
    stock, approx = caffe.NetSpec(), caffe.NetSpec()
    for n in (stock, approx):
        n.x = L.Input(shape=[dict(dim=[2, 9216])])
    stock.fc6 = L.InnerProduct(stock.x, num_output=4096, **kwargs)
    approx.fc6 = netspec.approx_dropout_inner_product(approx.x, 4096, 0.5, **kwargs)
    s, a = stock.to_proto().layer[-1], approx.to_proto().layer[-1]
    assert a.inner_product_param == s.inner_product_param
    assert list(a.param) == list(s.param) and a.name == s.name == "fc6"
    # inner_product_param as a dict, num_output in it
    approx.fc7 = netspec.approx_dropout_inner_product(
        approx.fc6, dropout_ratio=0.5, inner_product_param=dict(num_output=10, bias_term=False))
    fc7 = approx.to_proto().layer[-1]
    assert fc7.inner_product_param.num_output == 10 and not fc7.inner_product_param.bias_term
    assert not fc7.inner_product_param.HasField("bias_filler")
    with pytest.raises(ValueError, match="num_output is required"):
        netspec.approx_dropout_inner_product(approx.fc6, dropout_ratio=0.5)


def test_netspec_pattern_tops_are_named_after_their_layer(caffe):
    from approx_dropout.prototxt import netspec
    L = caffe.layers
    n = caffe.NetSpec()
    n.x = L.Input(shape=[dict(dim=[2, 20])])
    fc1, pattern = netspec.approx_dropout_inner_product(n.x, 16, 0.5, pattern_top=True)
    n.fc1 = fc1  # the pattern top left unnamed
    n.fc2 = netspec.approx_dropout_inner_product(L.ReLU(n.fc1, in_place=True), 4, 0.0,
                                                 pattern_from=pattern)
    layers = {layer.name: layer for layer in n.to_proto().layer}
    assert list(layers["fc1"].top) == ["fc1", "fc1_pattern"]
    assert list(layers["fc2"].bottom) == ["fc1", "fc1_pattern"]
    n.named = pattern  # a name the NetSpec gives wins
    assert list({x.name: x for x in n.to_proto().layer}["fc1"].top) == ["fc1", "named"]


def test_netspec_helper_sets_the_layer_up_in_caffe(caffe):
    """What only Caffe knows (here: three param specs for two blobs) raises
    NetCheckError, a ValueError, at the helper's call, not a crash later."""
    import approx_dropout
    from approx_dropout.prototxt import netspec
    L = caffe.layers
    n = caffe.NetSpec()
    n.x = L.Input(shape=[dict(dim=[2, 20])])
    too_many = [dict(lr_mult=1)] * 3
    with pytest.raises(approx_dropout.NetCheckError, match="Too many params") as err:
        netspec.approx_dropout_inner_product(n.x, 8, 0.5, param=too_many)
    assert isinstance(err.value, ValueError) and err.value.layer is not None
    netspec.approx_dropout_inner_product(n.x, 8, 0.5, param=too_many, check=False)
