"""The project's build of pycaffe: fresh caffe_pb2 with ApproxDropoutParameter,
and a real Caffe net (the paper's MLP with stock Dropout) runs."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format

from conftest import REPO


def test_approx_dropout_parameter_fields(caffe_pb2):
    msg = caffe_pb2.ApproxDropoutParameter()
    assert msg.dropout_ratio == pytest.approx(0.5)
    assert msg.pattern == caffe_pb2.ApproxDropoutParameter.ROW
    assert msg.side == caffe_pb2.ApproxDropoutParameter.OUTPUT
    assert (msg.tile_height, msg.tile_width) == (32, 32)
    assert list(msg.pattern_distribution) == []
    assert not msg.HasField("batch_slices")  # unset: the layer's default by pattern
    assert msg.tile_order == caffe_pb2.ApproxDropoutParameter.DIAGONAL
    assert not msg.HasField("layout")  # unset: BLOCK
    assert msg.recurrent_dropout_ratio == 0
    assert list(msg.recurrent_pattern_distribution) == []
    assert msg.recurrent_pattern == caffe_pb2.ApproxDropoutParameter.PER_STEP
    fields = {f.name: f.number for f in msg.DESCRIPTOR.fields}
    assert fields == {"dropout_ratio": 1, "pattern": 2, "side": 3,
                      "pattern_distribution": 4, "tile_height": 5, "tile_width": 6,
                      "batch_slices": 7, "tile_order": 8, "layout": 9,
                      "recurrent_dropout_ratio": 10, "recurrent_pattern_distribution": 11,
                      "recurrent_pattern": 12, "drop_connect_unit": 13}
    assert msg.drop_connect_unit == caffe_pb2.ApproxDropoutParameter.DROP_CONNECT_TILE
    assert caffe_pb2.ApproxDropoutParameter.DROP_CONNECT_WEIGHT == 1
    assert caffe_pb2.ApproxDropoutParameter.BLOCKS == 2
    assert caffe_pb2.ApproxDropoutParameter.STRIDED == 0
    assert caffe_pb2.ApproxDropoutParameter.BLOCK == 1
    assert caffe_pb2.ApproxDropoutParameter.PER_SEQUENCE == 1
    assert caffe_pb2.ApproxDropoutParameter.ROW_MAJOR == 0
    assert caffe_pb2.ApproxDropoutParameter.TILE == 1
    assert caffe_pb2.ApproxDropoutParameter.INPUT == 1
    field = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name["approx_dropout_param"]
    assert field.number == 1805


def test_layer_text_format_round_trip(caffe_pb2):
    text = """name: "fc2" type: "ApproxDropoutInnerProduct" bottom: "fc1" top: "fc2"
      inner_product_param { num_output: 2048 }
      approx_dropout_param { dropout_ratio: 0.7 pattern: TILE side: OUTPUT
                             pattern_distribution: [0.1, 0.2, 0.7] tile_height: 16 }"""
    layer = text_format.Parse(text, caffe_pb2.LayerParameter())
    param = layer.approx_dropout_param
    assert param.pattern == caffe_pb2.ApproxDropoutParameter.TILE
    assert list(param.pattern_distribution) == pytest.approx([0.1, 0.2, 0.7])
    assert (param.tile_height, param.tile_width) == (16, 32)
    again = caffe_pb2.LayerParameter.FromString(layer.SerializeToString())
    assert again == layer


def test_unknown_approx_field_is_a_parse_error(caffe_pb2):
    with pytest.raises(text_format.ParseError, match="dropout_rate"):
        text_format.Parse("approx_dropout_param { dropout_rate: 0.5 }",
                          caffe_pb2.LayerParameter())


def test_import_caffe_has_stock_layers(caffe):
    types = set(caffe.layer_type_list())
    assert {"InnerProduct", "Dropout", "LSTM", "HDF5Data"} <= types
    assert caffe.proto.caffe_pb2.ApproxDropoutParameter is not None


def test_stock_mlp_trains_through_dropout(caffe):
    caffe.set_mode_cpu()
    caffe.set_random_seed(1)
    net = caffe.Net(str(REPO / "prototxt/mlp_bench_stock.prototxt"), caffe.TRAIN)
    assert [net.params[n][0].data.shape for n in ("fc1", "fc2", "fc3")] == \
        [(2048, 784), (2048, 2048), (10, 2048)]
    net.forward()
    fc1 = net.blobs["fc1"].data  # after in-place ReLU and Dropout(0.7)
    pre = np.maximum(net.blobs["data"].data @ net.params["fc1"][0].data.T
                     + net.params["fc1"][1].data, 0)
    kept = fc1 != 0
    # kept units are the ReLU output scaled by 1 / (1 - 0.7)
    np.testing.assert_allclose(fc1[kept], pre[kept] / 0.3, rtol=1e-4, atol=1e-5)
    drop_fraction = 1 - kept.sum() / (pre > 0).sum()
    assert abs(drop_fraction - 0.7) < 0.01
    loss = float(net.blobs["loss"].data)
    assert np.isfinite(loss) and loss > 0
    net.backward()
    assert np.abs(net.params["fc1"][0].diff).sum() > 0


def test_standalone_caffe_pb2_then_import_caffe():
    """Loading caffe_pb2 alone first must not break a later `import caffe`."""
    code = ("from approx_dropout import caffe_env\n"
            "pb2 = caffe_env.import_caffe_pb2()\n"
            "caffe = caffe_env.import_caffe()\n"
            "assert caffe.proto.caffe_pb2 is pb2\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
