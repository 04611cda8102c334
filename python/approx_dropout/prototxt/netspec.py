"""NetSpec helpers: build nets with the approximate-dropout layers in pycaffe.

    from caffe import layers as L
    from approx_dropout.prototxt.netspec import approx_dropout_inner_product
    n = caffe.NetSpec()
    n.data, n.label = L.HDF5Data(...)
    n.fc1 = approx_dropout_inner_product(n.data, 2048, dropout_ratio=0.5)
    n.relu1 = L.ReLU(n.fc1, in_place=True)

Wiring patterns (the next layer skips the inputs the previous one dropped):

    n.fc1, n.fc1_pattern = approx_dropout_inner_product(n.data, 2048, 0.5,
                                                        pattern_top=True)
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.fc2 = approx_dropout_inner_product(n.fc1, 10, 0.0, pattern_from=n.fc1_pattern)

The distribution over dp is searched here (bounded by default) and written
into the layer, so the prototxt shows what training will sample. Its
largest dp is capped at the number of units the pattern acts on, which for
ROW on the input side, TILE and the LSTM depends on the input size: that is
read from the NetSpec graph (prototxt.shapes) where its data layer states it;
otherwise pass max_dp (trusted) or use the layer's built-in default
(distribution=None).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from .. import caffe_env
from ..patterns.search import check_distribution, search
from . import shapes as net_shapes
from .fill import DEFAULT_MAX_DP
from .rules import Units, layer_units, trim


def approx_dropout_param(dropout_ratio: float = 0.5, pattern: str = "ROW",
                         side: str = "OUTPUT",
                         distribution: str | Sequence[float] | None = "bounded",
                         max_dp: int = DEFAULT_MAX_DP, units: int | None = None,
                         layout: str | None = None,
                         **search_options: Any) -> dict[str, Any]:
    """approx_dropout_param as a dict for NetSpec.

    distribution: "bounded" or "paper" (searched with dp <= max_dp, and
    <= units when given), an explicit k_1 .. k_N (validated like the layer
    does), or None for the layer's built-in default. layout: "STRIDED" or
    "BLOCK" (ROW only; None leaves the layer's default, BLOCK).
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
    if layout is not None:
        if layout not in enums.Layout.keys():
            raise ValueError(f"layout must be one of {list(enums.Layout.keys())}, "
                             f"got {layout!r}")
        if pattern != "ROW":
            raise ValueError("layout applies to pattern: ROW only (the layer refuses it "
                             "with TILE)")
        param["layout"] = enums.Layout.Value(layout)
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
                 units: int | None, layout: str | None = None) -> dict[str, Any]:
    """approx_dropout_param for a layer being built: also checks a searched
    distribution's rate (the paper's search can miss it with few periods),
    so that no layer is written that Caffe would refuse at setup."""
    param = approx_dropout_param(dropout_ratio, pattern, side, distribution, max_dp, units,
                                 layout)
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


def _pattern_producer(pattern_from: Any) -> Any:
    """The NetSpec Function of the ApproxDropoutInnerProduct whose pattern top
    (its second top) pattern_from is, or ValueError."""
    fn = getattr(pattern_from, "fn", None)
    if fn is None or fn.type_name != "ApproxDropoutInnerProduct" or pattern_from.n != 1:
        raise ValueError("pattern_from must be the pattern top (the second top) of an "
                         "ApproxDropoutInnerProduct made with pattern_top=True")
    param = fn.params.get("approx_dropout_param", {})
    pb2 = caffe_env.import_caffe_pb2()
    row = param.get("pattern", 0) == pb2.ApproxDropoutParameter.ROW
    output = param.get("side", 0) == pb2.ApproxDropoutParameter.OUTPUT
    if not (row and output and param.get("dropout_ratio", 0.5) > 0):
        # its pattern top then says "outputs not dropped" (code -1), which a
        # consumer refuses: there is nothing to skip
        raise ValueError("pattern_from's layer must drop its outputs (pattern ROW, side "
                         "OUTPUT, dropout_ratio > 0)")
    return fn


def _check_wiring(bottom: Any, producer: Any, k: Optional[int]) -> None:
    """bottom must be the producer's output, directly or through one ReLU (the
    only layer that keeps the dropped columns zero), of the consumer's size."""
    fn = bottom.fn
    if fn.type_name == "ReLU" and len(fn.inputs) == 1:
        fn = fn.inputs[0].fn if fn.inputs[0].n == 0 else None
    if fn is not producer:
        raise ValueError("bottom must be the output of pattern_from's layer, directly or "
                         "through one ReLU")
    units = producer.params["inner_product_param"]["num_output"]
    if k is not None and k != units:
        raise ValueError(f"pattern_from's layer drops {units} units, but this layer's "
                         f"input size K is {k}")


def _check_in_caffe(tops: Any, bottoms: Sequence[Any]) -> None:
    """Set the new layer up in Caffe, in a child process (approx_dropout.check),
    on Input layers of its bottoms' shapes (a pattern bottom left out: its
    wiring is checked above), so that a parameter Caffe refuses raises
    NetCheckError (a ValueError) here rather than aborting the process when
    the net is built. Skipped where a bottom's shape is not known."""
    from ..net_check import check

    top = tops[0] if isinstance(tops, tuple) else tops
    layer = top.to_proto().layer[-1]
    shapes = [_input_shape(b)[0] for b in bottoms]
    if not all(net_shapes.known(shape) for shape in shapes):
        return
    pb2 = caffe_env.import_caffe_pb2()
    net = pb2.NetParameter(name=f"check_{layer.name}")
    for i, shape in enumerate(shapes):
        data = net.layer.add(name=f"input{i}", type="Input", top=[layer.bottom[i]])
        data.input_param.shape.add().dim.extend(shape)
    del layer.bottom[len(bottoms):]
    del layer.propagate_down[len(bottoms):]  # (one entry per bottom, or none)
    net.layer.add().CopyFrom(layer)
    check(net)


_FUNCTION_CLASS: Any = None


def _approx_function_class() -> Any:
    """NetSpec's Function, naming an unnamed pattern top "<layer's top>_pattern"
    (pycaffe would call it "ApproxDropoutInnerProduct1")."""
    global _FUNCTION_CLASS
    if _FUNCTION_CLASS is None:
        from caffe import net_spec  # after caffe_env.import_caffe() put it on the path

        class ApproxDropoutFunction(net_spec.Function):
            def _get_top_name(self, top, names, autonames):
                if top.n == 1 and top not in names:
                    first = super()._get_top_name(self.tops[0], names, autonames)
                    names[top] = f"{first}_pattern"
                return super()._get_top_name(top, names, autonames)

        _FUNCTION_CLASS = ApproxDropoutFunction
    return _FUNCTION_CLASS


# InnerProductParameter fields that NetSpec lets L.InnerProduct take as
# keyword arguments; the helper takes them too, so it replaces L.InnerProduct.
_INNER_PRODUCT_FIELDS = ("weight_filler", "bias_filler", "bias_term", "axis", "transpose")


def approx_dropout_inner_product(bottom: Any, num_output: Optional[int] = None,
                                 dropout_ratio: float = 0.5,
                                 *, pattern: str = "ROW", side: str = "OUTPUT",
                                 distribution: str | Sequence[float] | None = "bounded",
                                 max_dp: Optional[int] = None, layout: str | None = None,
                                 pattern_from: Any = None, pattern_top: bool = False,
                                 inner_product_param: dict[str, Any] | None = None,
                                 check: bool = True, **layer_kwargs: Any):
    """An ApproxDropoutInnerProduct top: InnerProduct + dropout in one layer.

    A drop-in for L.InnerProduct: num_output, weight_filler, bias_filler,
    bias_term, axis (or an inner_product_param dict), param=[...] (lr_mult,
    decay_mult) and name=... pass through as they are. Without fillers it
    uses xavier weights and zero biases (Caffe's own default, constant 0
    weights, would not train).
    max_dp: largest dp searched (default DEFAULT_MAX_DP), capped at the
    layer's units; required where they depend on an input size that the
    graph does not state. layout: "STRIDED" or "BLOCK" (ROW only).
    pattern_top: also output the layer's pattern (S x 4: dp, b, layout
    code, units per batch slice); returns (top, pattern) then, and the
    pattern top is called "<top>_pattern" unless the NetSpec names it.
    pattern_from: the pattern top of the layer that produced bottom
    (directly or through one ReLU, which must not be followed by any other
    in-place layer): this layer then skips the input columns that layer
    dropped, computing the same numbers faster. It must be ROW, side OUTPUT
    (dropout_ratio 0 makes it only skip).
    check: set the layer up in Caffe in a child process (where its input's
    shape is known), so that a setting Caffe refuses raises NetCheckError
    (a ValueError) here instead of aborting the process later.
    """
    caffe_env.import_caffe()
    inner = dict(inner_product_param or {})
    for key in _INNER_PRODUCT_FIELDS:
        if key in layer_kwargs:
            inner[key] = layer_kwargs.pop(key)
    if num_output is not None:
        inner["num_output"] = num_output
    if "num_output" not in inner:
        raise ValueError("num_output is required (as an argument or in inner_product_param)")
    num_output = inner["num_output"]
    inner.setdefault("weight_filler", {"type": "xavier"})
    if inner.get("bias_term", True):
        inner.setdefault("bias_filler", {"type": "constant", "value": 0})
    param = approx_dropout_param(dropout_ratio, pattern, side, distribution=None, layout=layout)
    units = _units("ApproxDropoutInnerProduct", {
        "inner_product_param": {k: v for k, v in inner.items()
                                if k in ("num_output", "axis", "transpose")},
        "approx_dropout_param": param}, bottom)
    wanted, cap = _resolve_max_dp(units, max_dp, distribution)
    bottoms = [bottom]
    if pattern_from is not None:
        if pattern != "ROW" or side != "OUTPUT":
            raise ValueError("a layer taking pattern_from must be pattern ROW, side OUTPUT")
        shape, _ = _input_shape(bottom)
        k = (net_shapes.count(shape, net_shapes.canonical_axis(inner.get("axis", 1), len(shape)))
             if shape else None)
        k = None if k is not None and k < 0 else k
        _check_wiring(bottom, _pattern_producer(pattern_from), k)
        bottoms.append(pattern_from)
    if pattern_top:
        if "ntop" in layer_kwargs:
            raise ValueError("pattern_top sets ntop (2); do not pass ntop")
        layer_kwargs["ntop"] = 2
    layer_kwargs.update(inner_product_param=inner, approx_dropout_param=_layer_param(
        dropout_ratio, pattern, side, distribution, wanted, cap, layout))
    fn = _approx_function_class()("ApproxDropoutInnerProduct", tuple(bottoms), layer_kwargs)
    tops = fn.tops[0] if fn.ntop == 1 else fn.tops
    if check:
        _check_in_caffe(tops, [bottom])
    return tops


def approx_dropout_lstm(x: Any, cont: Any, num_output: int, dropout_ratio: float = 0.5,
                        *, pattern: str = "ROW",
                        distribution: str | Sequence[float] | None = "bounded",
                        max_dp: Optional[int] = None,
                        weight_filler: dict[str, Any] | None = None,
                        bias_filler: dict[str, Any] | None = None, layout: str | None = None,
                        check: bool = True, **layer_kwargs: Any):
    """An ApproxDropoutLSTM top: LSTM with approximate dropout on its input x_t.

    x is time-major (T x N x ...), cont is T x N, as for Caffe's LSTM.
    ROW drops input features, TILE drops tiles of the input-to-gates weights;
    the layer checks at setup that dp <= the number of features (or tiles),
    so the searched dp is capped there (max_dp is needed when x's shape is
    not stated by the graph). layout: "STRIDED" or "BLOCK" (ROW only).
    check: as for approx_dropout_inner_product.
    """
    caffe = caffe_env.import_caffe()
    recurrent = {"num_output": num_output,
                 "weight_filler": weight_filler or {"type": "uniform", "min": -0.08, "max": 0.08},
                 "bias_filler": bias_filler or {"type": "constant", "value": 0}}
    shape_param = approx_dropout_param(dropout_ratio, pattern, "OUTPUT", distribution=None,
                                       layout=layout)
    del shape_param["side"]  # the LSTM always drops its input; it refuses an explicit side
    units = _units("ApproxDropoutLSTM", {"recurrent_param": {"num_output": num_output},
                                         "approx_dropout_param": shape_param}, x)
    wanted, cap = _resolve_max_dp(units, max_dp, distribution)
    param = _layer_param(dropout_ratio, pattern, "OUTPUT", distribution, wanted, cap, layout)
    del param["side"]
    top = caffe.layers.ApproxDropoutLSTM(x, cont, recurrent_param=recurrent,
                                         approx_dropout_param=param, **layer_kwargs)
    if check:
        _check_in_caffe(top, [x, cont])
    return top
