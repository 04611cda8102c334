"""NetSpec helpers: build nets with the approximate-dropout layers in pycaffe.

    from caffe import layers as L
    from approx_dropout.netspec import approx_dropout_inner_product
    n = caffe.NetSpec()
    n.data, n.label = L.HDF5Data(...)
    n.fc1 = approx_dropout_inner_product(n.data, 2048, dropout_ratio=0.5)
    n.relu1 = L.ReLU(n.fc1, in_place=True)

The distribution over dp is searched here (bounded by default) and written
into the layer, so the prototxt shows what training will sample.
"""
from __future__ import annotations

from typing import Any, Sequence

from . import caffe_env
from .fill_distribution import DEFAULT_MAX_DP, trim
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
        param["pattern_distribution"] = trim(check_distribution(distribution, dropout_ratio))
    return param


def approx_dropout_inner_product(bottom: Any, num_output: int, dropout_ratio: float = 0.5,
                                 *, pattern: str = "ROW", side: str = "OUTPUT",
                                 distribution: str | Sequence[float] | None = "bounded",
                                 max_dp: int = DEFAULT_MAX_DP,
                                 weight_filler: dict[str, Any] | None = None,
                                 bias_filler: dict[str, Any] | None = None,
                                 bias_term: bool = True, **layer_kwargs: Any):
    """An ApproxDropoutInnerProduct top: InnerProduct + dropout in one layer.

    Extra keyword arguments (param=..., name=..., ntop=...) go to the layer
    as with any NetSpec layer.
    """
    caffe = caffe_env.import_caffe()
    inner = {"num_output": num_output, "bias_term": bias_term,
             "weight_filler": weight_filler or {"type": "xavier"}}
    if bias_term:
        inner["bias_filler"] = bias_filler or {"type": "constant", "value": 0}
    units = num_output if (pattern, side) == ("ROW", "OUTPUT") else None
    return caffe.layers.ApproxDropoutInnerProduct(
        bottom, inner_product_param=inner,
        approx_dropout_param=approx_dropout_param(
            dropout_ratio, pattern, side, distribution, max_dp, units),
        **layer_kwargs)


def approx_dropout_lstm(x: Any, cont: Any, num_output: int, dropout_ratio: float = 0.5,
                        *, pattern: str = "ROW",
                        distribution: str | Sequence[float] | None = "bounded",
                        max_dp: int = DEFAULT_MAX_DP,
                        weight_filler: dict[str, Any] | None = None,
                        bias_filler: dict[str, Any] | None = None, **layer_kwargs: Any):
    """An ApproxDropoutLSTM top: LSTM with approximate dropout on its input x_t.

    x is time-major (T x N x ...), cont is T x N, as for Caffe's LSTM.
    ROW drops input features, TILE drops tiles of the input-to-gates weights;
    the layer checks at setup that dp <= the number of features (or tiles).
    """
    caffe = caffe_env.import_caffe()
    recurrent = {"num_output": num_output,
                 "weight_filler": weight_filler or {"type": "uniform", "min": -0.08, "max": 0.08},
                 "bias_filler": bias_filler or {"type": "constant", "value": 0}}
    param = approx_dropout_param(dropout_ratio, pattern, "OUTPUT", distribution, max_dp)
    del param["side"]  # the LSTM always drops its input; it refuses an explicit side
    return caffe.layers.ApproxDropoutLSTM(x, cont, recurrent_param=recurrent,
                                          approx_dropout_param=param, **layer_kwargs)
