"""What Caffe's approximate-dropout layers accept and default to, in Python.

The checks the C++ layers make at setup, and the defaults they fill in,
mirrored so that the tools (fill, convert, netspec, shapes) can refuse or
size a layer before Caffe sees it:

- CheckApproxDropoutParam (layers/src/caffe/util/approx_dropout_param.cpp)
  and the LSTM's own checks: field_problem, layer_units (a setting refused
  whatever the distribution is its Units.problem);
- DropoutPatternSampler (util/approx_dropout_pattern.cpp): a distribution
  reaches at most dp = the units the pattern acts on, and its rate must be
  dropout_ratio (distribution_problem, trim);
- DefaultBatchSlices (util/approx_dropout_param.cpp) and the pattern top's
  rows (util/approx_dropout_pattern_top.cpp): default_batch_slices,
  pattern_slices, PATTERN_COLUMNS.

The units a pattern acts on (the largest dp a layer accepts):

| layer, pattern | units |
|---|---|
| ApproxDropoutInnerProduct ROW, side OUTPUT | num_output |
| ApproxDropoutInnerProduct ROW, side INPUT | K, the input size (bottom count from axis) |
| ApproxDropoutInnerProduct TILE | ceil(num_output / tile_height) * ceil(K / tile_width) |
| ApproxDropoutLSTM ROW | K, the features of x_t (x count from axis 2) |
| ApproxDropoutLSTM TILE | tiles of W_xc: ceil(4 num_output / tile_height) * ceil(K / tile_width) |

K is not in the layer's parameters: callers infer the input's shape from the
net (prototxt.shapes) and pass it; None means unknown. This module imports
no other prototxt module (shapes imports it for the pattern top), and
neither Caffe nor protobuf: a layer is any object with the fields of
caffe_pb2.LayerParameter.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from ..patterns.search import LAYER_RATE_TOLERANCE

ROW, TILE = 0, 1        # ApproxDropoutParameter.Pattern
OUTPUT, INPUT = 0, 1    # ApproxDropoutParameter.Side
TILE_BLOCKS = 2         # ApproxDropoutParameter.TileOrder BLOCKS
PATTERN_COLUMNS = 4     # a pattern top's row: (dp, b, layout code, units)
RECURRENT_FIELDS = ("recurrent_dropout_ratio", "recurrent_pattern_distribution",
                    "recurrent_pattern")


@dataclass
class Units:
    """How many units a layer's pattern acts on: the largest dp it accepts."""
    count: Optional[int]   # None: depends on an input size that is unknown
    what: str              # what they are, for messages
    at_least: int = 1      # holds even when count is None
    unknown: str = ""      # why count is None
    problem: str = ""      # a setting the layer refuses whatever the distribution


def _input_size(shape: Optional[Sequence[int]], axis: int) -> Optional[int]:
    """The count of shape from axis (negative: from the end), as Caffe's
    InnerProduct takes K; None when the shape or one of those dimensions
    (negative: unknown, see shapes.UNKNOWN) is not known."""
    if shape is None or not shape:
        return None
    start = axis + len(shape) if axis < 0 else axis
    dims = shape[start:]
    return None if any(d < 0 for d in dims) else math.prod(dims)


def _tiles(rows: int, k: Optional[int], param, matrix: str, unknown: str) -> Units:
    th, tw = param.tile_height, param.tile_width
    where = "approx_dropout_param."
    if th < 1 or tw < 1:
        return Units(None, "tiles", problem=f"{where}tile_height and tile_width must be >= 1")
    if th > rows:
        return Units(None, "tiles", problem=f"{where}tile_height ({th}) is larger than the "
                                            f"{matrix} matrix's {rows} rows")
    if k is not None and tw > k:
        return Units(None, "tiles", problem=f"{where}tile_width ({tw}) is larger than the "
                                            f"input size K ({k})")
    tile_rows = math.ceil(rows / th)
    if k is None:
        return Units(None, "number of tiles", at_least=tile_rows, unknown=unknown)
    return Units(tile_rows * math.ceil(k / tw), f"tiles ({tile_rows} x {math.ceil(k / tw)})")


def _is_set(param, name: str) -> bool:
    field = param.DESCRIPTOR.fields_by_name.get(name)
    if field is None:  # a caffe_pb2 older than the field
        return False
    if field.label == field.LABEL_REPEATED:
        return len(getattr(param, name)) > 0
    return param.HasField(name)


def field_problem(layer) -> str:
    """Why the layer refuses its approx_dropout_param fields whatever its
    input (layout with TILE, DropConnect's unit, the LSTM's recurrent fields elsewhere, a
    recurrent_dropout_ratio outside [0, 1)), or ""."""
    param = layer.approx_dropout_param
    where = "approx_dropout_param."
    if _is_set(param, "layout") and param.pattern != ROW:
        return f"{where}layout applies to pattern: ROW only"
    if _is_set(param, "drop_connect_unit"):
        return f"{where}drop_connect_unit applies to DropConnectInnerProduct only"
    if layer.type != "ApproxDropoutLSTM":
        for name in RECURRENT_FIELDS:
            if _is_set(param, name):
                return f"{where}{name} applies to ApproxDropoutLSTM only"
    elif _is_set(param, "recurrent_dropout_ratio"):
        ratio = param.recurrent_dropout_ratio
        if not 0 <= ratio < 1:  # NaN fails too
            return f"{where}recurrent_dropout_ratio must be in [0, 1), got {ratio:g}"
    return ""


def layer_units(layer, input_shape: Optional[Sequence[int]] = None,
                unknown: str = "the prototxt does not give the input's shape") -> Units:
    """The units of an approximate-dropout layer whose first bottom has input_shape."""
    param = layer.approx_dropout_param
    problem = field_problem(layer)
    if problem:
        return Units(None, "units", problem=problem)
    if layer.type == "ApproxDropoutLSTM":
        rows = 4 * layer.recurrent_param.num_output
        k = (_input_size(input_shape, 2)
             if input_shape is not None and len(input_shape) >= 2 else None)
        if param.HasField("side") and not (param.pattern == ROW and param.side == INPUT):
            return Units(None, "units", problem="approx_dropout_param.side: ApproxDropoutLSTM "
                                                "always drops its input; leave side unset")
        if rows < 4:
            return Units(None, "units", problem="recurrent_param.num_output must be positive")
        if param.pattern == TILE:
            return _tiles(rows, k, param, "input-to-gates (4 num_output x K)", unknown)
        return Units(k, "input size K", unknown=unknown)
    ip = layer.inner_product_param
    n = ip.num_output
    if ip.transpose:
        return Units(None, "units", problem="inner_product_param.transpose: true is not "
                                            "supported by ApproxDropoutInnerProduct")
    if n < 1:
        return Units(None, "units", problem="inner_product_param.num_output must be positive")
    k = _input_size(input_shape, ip.axis)
    if param.pattern == TILE:
        if param.side == INPUT:
            return Units(None, "units", problem="approx_dropout_param.side: INPUT applies to "
                                                "pattern: ROW only")
        return _tiles(n, k, param, "weight (num_output x K)", unknown)
    if param.side == INPUT:
        return Units(k, "input size K", unknown=unknown)
    return Units(n, "num_output")


def needs_input_size(layer) -> bool:
    """Whether the layer's units depend on its input size K."""
    param = layer.approx_dropout_param
    return (layer.type == "ApproxDropoutLSTM" or param.pattern == TILE
            or param.side == INPUT)


def distribution_problem(k: Sequence[float], p: float, units: Optional[Units] = None) -> str:
    """Why the layer would refuse pattern_distribution k for dropout_ratio p, or ""
    (the checks of DropoutPatternSampler: entries >= 0 summing to 1, the rate
    sum_i k_i (i - 1) / i within LAYER_RATE_TOLERANCE of p, dp within the units)."""
    if any(not math.isfinite(v) or v < 0 for v in k):
        return "it has a negative or non-finite entry"
    total = math.fsum(k)
    if abs(total - 1) > 1e-4:
        return f"it sums to {total:.6g}, not 1"
    rate = math.fsum(v * i / (i + 1) for i, v in enumerate(k))
    if abs(rate - p) > LAYER_RATE_TOLERANCE:
        return f"its rate is {rate:.6g}, not the dropout_ratio {p:.6g}"
    if units is not None and units.count is not None and len(trim(k)) > units.count:
        return f"it reaches dp = {len(trim(k))}, beyond the layer's {units.what} {units.count}"
    return ""


def trim(k: Sequence[float]) -> list[float]:
    """Drop trailing zeros: the layer reads dp = len(distribution) as the max."""
    values = [float(v) for v in k]
    while values and values[-1] == 0:
        values.pop()
    return values


def default_batch_slices(param) -> int:
    """The C++ DefaultBatchSlices: 4 for TILE in tile_order BLOCKS, 1 for
    other TILE and for ROW dropping outputs at dropout_ratio <= 0.5 (float32,
    as the layer reads it), else 2."""
    import numpy as np  # the float32 comparison the layer makes

    if param.pattern == TILE:
        return 4 if param.tile_order == TILE_BLOCKS else 1
    if param.side == OUTPUT and np.float32(param.dropout_ratio) <= np.float32(0.5):
        return 1
    return 2


def pattern_slices(layer) -> int:
    """Rows S of an ApproxDropoutInnerProduct's pattern top: its batch slices
    (unset: the layer's default, also under a pattern bottom, whose S need not
    match its own)."""
    param = layer.approx_dropout_param
    if param.HasField("batch_slices"):
        return param.batch_slices
    return default_batch_slices(param)
