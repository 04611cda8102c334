"""Building nets with the approximate layers through pycaffe's NetSpec."""
from __future__ import annotations

import numpy as np
import pytest

from approx_dropout.harness import check as caffe_check
from approx_dropout.patterns.search import SearchError, bounded_search
from approx_dropout.prototxt import netspec


def small_net(caffe, **kwargs):
    L = caffe.layers
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(
        shape=[dict(dim=[8, 50]), dict(dim=[8])],
        data_filler=[dict(type="uniform"), dict(type="constant", value=1)], ntop=2)
    n.fc1 = netspec.approx_dropout_inner_product(n.data, 64, 0.7, **kwargs)
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.fc2 = L.InnerProduct(n.fc1, num_output=4, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.fc2, n.label)
    return n.to_proto()


def load(caffe, proto, tmp_path, phase):
    path = tmp_path / "net.prototxt"
    path.write_text(str(proto))
    return caffe.Net(str(path), phase)


def test_netspec_layer_carries_the_searched_distribution(caffe, tmp_path):
    caffe.set_mode_cpu()
    proto = small_net(caffe)
    layer = [x for x in proto.layer if x.name == "fc1"][0]
    assert layer.type == "ApproxDropoutInnerProduct"
    assert layer.inner_product_param.num_output == 64
    k = list(layer.approx_dropout_param.pattern_distribution)
    want = bounded_search(0.7, 16).distribution
    np.testing.assert_allclose(k, want[:len(k)], atol=1e-7)
    net = load(caffe, proto, tmp_path, caffe.TRAIN)
    net.forward()
    net.backward()
    # whole neurons are dropped (p = 0.7) in each of ROW's default 2 slices
    rows = net.blobs["fc1"].data.shape[0]
    for s in range(2):
        block = net.blobs["fc1"].data[s * rows // 2:(s + 1) * rows // 2]
        if len(block):
            assert (block == 0).all(axis=0).mean() > 0.5


def test_netspec_tile_and_explicit_distribution(caffe, tmp_path):
    caffe.set_mode_cpu()
    proto = small_net(caffe, pattern="TILE", distribution=[0, 0, 0.6, 0.4])
    param = [x for x in proto.layer if x.name == "fc1"][0].approx_dropout_param
    assert param.pattern == caffe.proto.caffe_pb2.ApproxDropoutParameter.TILE
    assert list(param.pattern_distribution) == pytest.approx([0, 0, 0.6, 0.4])
    param_paper = netspec.approx_dropout_param(0.5, distribution="paper", max_dp=8)
    assert len(param_paper["pattern_distribution"]) == 8
    assert "pattern_distribution" not in netspec.approx_dropout_param(0.5, distribution=None)


def test_netspec_bad_arguments(caffe):
    with pytest.raises(SearchError, match="sums to"):
        netspec.approx_dropout_param(0.5, distribution=[0.5, 0.6])
    with pytest.raises(ValueError, match="pattern must be one of"):
        netspec.approx_dropout_param(0.5, pattern="DIAGONAL")
    with pytest.raises(ValueError, match="side must be one of"):
        netspec.approx_dropout_param(0.5, side="BOTH")
    with pytest.raises(SearchError, match="must be in \\[0, 1\\)"):
        netspec.approx_dropout_param(1.0)


def test_netspec_lstm(caffe, tmp_path):
    caffe.set_mode_cpu()
    L = caffe.layers
    n = caffe.NetSpec()
    n.x, n.cont = L.DummyData(shape=[dict(dim=[5, 2, 24]), dict(dim=[5, 2])],
                              data_filler=[dict(type="uniform"),
                                           dict(type="constant", value=1)], ntop=2)
    n.h = netspec.approx_dropout_lstm(n.x, n.cont, 8, 0.5)
    n.loss = L.Reduction(n.h, loss_weight=1)
    proto = n.to_proto()
    layer = [x for x in proto.layer if x.name == "h"][0]
    assert layer.type == "ApproxDropoutLSTM" and not layer.approx_dropout_param.HasField("side")
    assert list(layer.approx_dropout_param.pattern_distribution) == [0.0, 1.0]
    net = load(caffe, proto, tmp_path, caffe.TRAIN)
    net.forward()
    net.backward()
    assert net.blobs["h"].data.shape == (5, 2, 8)


def wired_net(caffe, layout=None, **consumer):
    """data -> fc1 (pattern top) -> ReLU -> fc2 (fc1's pattern) -> loss."""
    L = caffe.layers
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(
        shape=[dict(dim=[8, 50]), dict(dim=[8])],
        data_filler=[dict(type="uniform"), dict(type="constant", value=1)], ntop=2)
    n.fc1, n.fc1_pattern = netspec.approx_dropout_inner_product(
        n.data, 64, 0.7, layout=layout, pattern_top=True)
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.fc2 = netspec.approx_dropout_inner_product(n.fc1, 4, 0.0, pattern_from=n.fc1_pattern,
                                                 **consumer)
    n.loss = L.SoftmaxWithLoss(n.fc2, n.label)
    return n.to_proto()


def test_netspec_wires_a_pattern_and_the_net_runs(caffe):
    pb2 = caffe.proto.caffe_pb2
    proto = wired_net(caffe, layout="STRIDED")
    layers = {layer.name: layer for layer in proto.layer}
    assert list(layers["fc1"].top) == ["fc1", "fc1_pattern"]
    assert list(layers["fc2"].bottom) == ["fc1", "fc1_pattern"]
    assert layers["fc1"].approx_dropout_param.layout == pb2.ApproxDropoutParameter.STRIDED
    assert not layers["fc2"].approx_dropout_param.HasField("layout")
    # dropout_ratio 0: only skips, with the layer's default (dp = 1) distribution
    assert list(layers["fc2"].approx_dropout_param.pattern_distribution) == [1.0]
    (outcome,) = caffe_check.check_nets([caffe_check.Job(str(proto), iterations=2)])
    assert outcome.loaded and outcome.finite, outcome.describe()
    assert outcome.report["shapes"]["fc1_pattern"] == [2, 4]  # ROW's default 2 slices


def test_netspec_layout(caffe):
    pb2 = caffe.proto.caffe_pb2
    assert netspec.approx_dropout_param(0.5, layout="BLOCK")["layout"] == \
        pb2.ApproxDropoutParameter.BLOCK
    assert "layout" not in netspec.approx_dropout_param(0.5)
    with pytest.raises(ValueError, match="layout must be one of"):
        netspec.approx_dropout_param(0.5, layout="DIAGONAL")
    with pytest.raises(ValueError, match="layout applies to pattern: ROW only"):
        netspec.approx_dropout_param(0.5, pattern="TILE", layout="BLOCK")
    L = caffe.layers
    n = caffe.NetSpec()
    n.x, n.cont = L.DummyData(shape=[dict(dim=[5, 2, 24]), dict(dim=[5, 2])], ntop=2)
    n.h = netspec.approx_dropout_lstm(n.x, n.cont, 8, 0.5, layout="STRIDED")
    (layer,) = [x for x in n.to_proto().layer if x.name == "h"]
    assert layer.approx_dropout_param.layout == pb2.ApproxDropoutParameter.STRIDED
    assert not layer.approx_dropout_param.HasField("side")


def test_netspec_refuses_wiring_the_layer_would_refuse(caffe):
    L = caffe.layers
    n = caffe.NetSpec()
    n.data = L.DummyData(shape=[dict(dim=[8, 50])], data_filler=[dict(type="uniform")])
    n.fc1, n.fc1_pattern = netspec.approx_dropout_inner_product(n.data, 64, 0.7,
                                                                pattern_top=True)
    n.other = netspec.approx_dropout_inner_product(n.data, 64, 0.5)
    n.sig = L.Sigmoid(n.fc1)
    with pytest.raises(ValueError, match="pattern top .* of an ApproxDropoutInnerProduct"):
        netspec.approx_dropout_inner_product(n.fc1, 8, pattern_from=n.fc1)
    with pytest.raises(ValueError, match="output of pattern_from's layer, directly or "
                                         "through one ReLU"):
        netspec.approx_dropout_inner_product(n.other, 8, pattern_from=n.fc1_pattern)
    with pytest.raises(ValueError, match="through one ReLU"):
        netspec.approx_dropout_inner_product(n.sig, 8, pattern_from=n.fc1_pattern)
    with pytest.raises(ValueError, match="must be pattern ROW, side OUTPUT"):
        netspec.approx_dropout_inner_product(n.fc1, 8, side="INPUT", pattern_from=n.fc1_pattern)
    n.tile, n.tile_pattern = netspec.approx_dropout_inner_product(
        n.data, 64, 0.5, pattern="TILE", distribution=None, pattern_top=True)
    n.none, n.none_pattern = netspec.approx_dropout_inner_product(n.data, 64, 0.0,
                                                                  pattern_top=True)
    for top, pattern in ((n.tile, n.tile_pattern), (n.none, n.none_pattern)):
        with pytest.raises(ValueError, match="must drop its outputs"):
            netspec.approx_dropout_inner_product(top, 8, pattern_from=pattern)
    # through a ReLU that is not in place: wired too
    n.relu = L.ReLU(n.fc1)
    n.fc2 = netspec.approx_dropout_inner_product(n.relu, 8, pattern_from=n.fc1_pattern)
    (fc2,) = [layer for layer in n.to_proto().layer if layer.name == "fc2"]
    assert list(fc2.bottom) == ["relu", "fc1_pattern"]
