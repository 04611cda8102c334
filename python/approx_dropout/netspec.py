"""NetSpec helpers: build nets with the approximate-dropout layers in pycaffe.

    from caffe import layers as L
    from approx_dropout.netspec import approx_dropout_inner_product
    n = caffe.NetSpec()
    n.data, n.label = L.HDF5Data(...)
    n.fc1 = approx_dropout_inner_product(n.data, 2048, dropout_ratio=0.5)
    n.relu1 = L.ReLU(n.fc1, in_place=True)

The distribution over dp is searched here (bounded by default) and written
into the layer, so the prototxt shows what training will sample. Its
largest dp is capped at the number of units the pattern acts on, which for
ROW on the input side, TILE and the LSTM depends on the input size: that is
read from the NetSpec graph (net_shapes) where its data layer states it;
otherwise pass max_dp (trusted) or use the layer's built-in default
(distribution=None).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from . import caffe_env, net_shapes
from .fill_distribution import DEFAULT_MAX_DP, Units, layer_units, trim
from .pattern_search import check_distribution, search


def approx_dropout_param(dropout_ratio: float = 0.5, pattern: str = "ROW",
                         side: str = "OUTPUT",
                         distribution: str | Sequence[float] | None = "bounded",
                         max_dp: int = DEFAULT_MAX_DP, units: int | None = None,
                         **search_options: Any) -> dict[str, Any]:
    """approx_dropout_param as a dict for NetSpec.

    distribution: "bounded" or "paper" (searched with dp <= max_dp, and
    <= units when given), an explicit k_1 .. k_N (validated like the layer
    does), or None for the layer's built-in default.
    """
    pb2 = caffe_env.import_caffe_pb2()
    enums = pb2.ApproxDropoutParameter
    if pattern not in enums.Pattern.keys():
        raise ValueError(f"pattern must be one of {list(enums.Pattern.keys())}, got {pattern!r}")
    if side not in enums.Side.keys():
        raise ValueError(f"side must be one of {list(enums.Side.keys())}, got {side!r}")
    param: dict[str, Any] = {"dropout_ratio": dropout_ratio,
                             "pattern": enums.Pattern.Value(pattern),
                             "side": enums.Side.Value(side)}
    if isinstance(distribution, str):
        n = min(max_dp, units) if units else max_dp
        k = search(dropout_ratio, n, distribution, **search_options).distribution
        param["pattern_distribution"] = trim(k)
    elif distribution is not None:
        k = trim(check_distribution(distribution, dropout_ratio))
        if units is not None and len(k) > units:
            raise ValueError(f"pattern_distribution gives dp = {len(k)} probability "
                             f"{k[-1]:g}, but the pattern acts on only {units} units")
        param["pattern_distribution"] = k
    return param


def _layer_param(dropout_ratio: float, pattern: str, side: str,
                 distribution: str | Sequence[float] | None, max_dp: int,
                 units: int | None) -> dict[str, Any]:
    """approx_dropout_param for a layer being built: also checks a searched
    distribution's rate (the paper's search can miss it with few periods),
    so that no layer is written that Caffe would refuse at setup."""
    param = approx_dropout_param(dropout_ratio, pattern, side, distribution, max_dp, units)
    if "pattern_distribution" in param:
        check_distribution(param["pattern_distribution"], float(np.float32(dropout_ratio)))
    return param


def _input_shape(top: Any) -> tuple[Optional[net_shapes.Shape], str]:
    """The shape of a NetSpec top, where its data layers state it."""
    proto = top.to_proto()  # the layers that compute top, its own last
    name = proto.layer[-1].top[top.n]
    shapes = net_shapes.infer(proto, net_shapes.TRAIN)
    return shapes.blobs.get(name), shapes.reason.get(name, "")


def _units(layer_type: str, params: dict[str, Any], bottom: Any) -> Units:
    pb2 = caffe_env.import_caffe_pb2()
    layer = pb2.LayerParameter(name="netspec", type=layer_type)
    for key, value in params.items():
        getattr(layer, key).MergeFrom(_message(getattr(layer, key).__class__, value))
    shape, why = _input_shape(bottom)
    return layer_units(layer, shape, f"the input's shape is unknown: {why}")


def _message(cls: Any, values: dict[str, Any]) -> Any:
    message = cls()
    for key, value in values.items():
        field = getattr(message, key)
        if isinstance(value, dict):
            field.MergeFrom(_message(field.__class__, value))
        elif isinstance(value, (list, tuple)):
            field.extend(value)
        else:
            setattr(message, key, value)
    return message


def _resolve_max_dp(units: Units, max_dp: Optional[int],
                    distribution: Any) -> tuple[int, int | None]:
    """(max_dp to search, units to cap at) or ValueError for a layer Caffe would refuse."""
    if units.problem:
        raise ValueError(units.problem)
    wanted = DEFAULT_MAX_DP if max_dp is None else max_dp
    if units.count is None and isinstance(distribution, str) and wanted > units.at_least \
            and max_dp is None:
        raise ValueError(f"dp must not exceed the layer's {units.what}, and {units.unknown}; "
                         f"pass max_dp (no larger than the {units.what}) or distribution=None")
    return wanted, units.count


def approx_dropout_inner_product(bottom: Any, num_output: int, dropout_ratio: float = 0.5,
                                 *, pattern: str = "ROW", side: str = "OUTPUT",
                                 distribution: str | Sequence[float] | None = "bounded",
                                 max_dp: Optional[int] = None,
                                 weight_filler: dict[str, Any] | None = None,
                                 bias_filler: dict[str, Any] | None = None,
                                 bias_term: bool = True, **layer_kwargs: Any):
    """An ApproxDropoutInnerProduct top: InnerProduct + dropout in one layer.

    max_dp: largest dp searched (default DEFAULT_MAX_DP), capped at the
    layer's units; required where they depend on an input size that the
    graph does not state. Extra keyword arguments (param=..., name=...,
    ntop=...) go to the layer as with any NetSpec layer.
    """
    caffe = caffe_env.import_caffe()
    inner = {"num_output": num_output, "bias_term": bias_term,
             "weight_filler": weight_filler or {"type": "xavier"}}
    if bias_term:
        inner["bias_filler"] = bias_filler or {"type": "constant", "value": 0}
    param = approx_dropout_param(dropout_ratio, pattern, side, distribution=None)
    units = _units("ApproxDropoutInnerProduct", {
        "inner_product_param": {"num_output": num_output},
        "approx_dropout_param": param}, bottom)
    wanted, cap = _resolve_max_dp(units, max_dp, distribution)
    return caffe.layers.ApproxDropoutInnerProduct(
        bottom, inner_product_param=inner,
        approx_dropout_param=_layer_param(
            dropout_ratio, pattern, side, distribution, wanted, cap),
        **layer_kwargs)


def approx_dropout_lstm(x: Any, cont: Any, num_output: int, dropout_ratio: float = 0.5,
                        *, pattern: str = "ROW",
                        distribution: str | Sequence[float] | None = "bounded",
                        max_dp: Optional[int] = None,
                        weight_filler: dict[str, Any] | None = None,
                        bias_filler: dict[str, Any] | None = None, **layer_kwargs: Any):
    """An ApproxDropoutLSTM top: LSTM with approximate dropout on its input x_t.

    x is time-major (T x N x ...), cont is T x N, as for Caffe's LSTM.
    ROW drops input features, TILE drops tiles of the input-to-gates weights;
    the layer checks at setup that dp <= the number of features (or tiles),
    so the searched dp is capped there (max_dp is needed when x's shape is
    not stated by the graph).
    """
    caffe = caffe_env.import_caffe()
    recurrent = {"num_output": num_output,
                 "weight_filler": weight_filler or {"type": "uniform", "min": -0.08, "max": 0.08},
                 "bias_filler": bias_filler or {"type": "constant", "value": 0}}
    shape_param = approx_dropout_param(dropout_ratio, pattern, "OUTPUT", distribution=None)
    del shape_param["side"]  # the LSTM always drops its input; it refuses an explicit side
    units = _units("ApproxDropoutLSTM", {"recurrent_param": {"num_output": num_output},
                                         "approx_dropout_param": shape_param}, x)
    wanted, cap = _resolve_max_dp(units, max_dp, distribution)
    param = _layer_param(dropout_ratio, pattern, "OUTPUT", distribution, wanted, cap)
    del param["side"]
    return caffe.layers.ApproxDropoutLSTM(x, cont, recurrent_param=recurrent,
                                          approx_dropout_param=param, **layer_kwargs)
