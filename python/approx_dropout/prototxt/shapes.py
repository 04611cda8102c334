"""Blob shapes of a Caffe net, inferred from the prototxt without loading Caffe.

The approximate-dropout layers refuse, at setup, a pattern period dp larger
than the number of units the pattern acts on, and tiles larger than the
weight matrix; for ROW on the input side, TILE and ApproxDropoutLSTM those
depend on the input size K, which the prototxt states only indirectly (the
bottom's shape). This module follows shapes from the net's inputs (Input,
DummyData, net-level inputs, HDF5Data files that can be read) through the
common layers, as Caffe's Reshape methods compute them. A shape it cannot
know is None, with the reason, so a caller can ask the user instead of
guessing; a dimension it cannot know is UNKNOWN (-1), e.g. the channels of a
Data layer, which come from its database, while its batch and crop size are
in the prototxt (a Convolution's output then has known channels again).
Stages and levels of include/exclude rules are not evaluated; phases are.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

# the pattern top's shape; rules imports no other prototxt module, so no cycle
from .rules import PATTERN_COLUMNS, pattern_slices

Shape = tuple[int, ...]
TRAIN, TEST = 0, 1  # caffe.proto Phase
UNKNOWN = -1        # a dimension the prototxt does not give

# Layers whose (every) top has the shape of their first bottom.
SAME_SHAPE = frozenset("""
    ReLU PReLU ELU Sigmoid TanH AbsVal BNLL Power Exp Log Threshold Dropout
    BatchNorm Scale Bias LRN MVN Softmax Clip Swish HardSigmoid HardSwish ReLU6
    Split Eltwise Normalize
""".split())


@dataclass
class NetShapes:
    """Shapes of one phase: blob name -> shape (None: unknown, see reason)."""
    phase: int
    blobs: dict[str, Optional[Shape]] = field(default_factory=dict)
    reason: dict[str, str] = field(default_factory=dict)
    bottoms: dict[int, list[Optional[Shape]]] = field(default_factory=dict)  # layer -> shapes
    bottom_reasons: dict[int, list[str]] = field(default_factory=dict)


def included(layer, phase: int) -> bool:
    """Caffe's include/exclude test, on the phase only."""
    if layer.HasField("phase") and layer.phase != phase:
        return False
    if len(layer.include):
        return any(not r.HasField("phase") or r.phase == phase for r in layer.include)
    return not any(r.HasField("phase") and r.phase == phase for r in layer.exclude)


def count(shape: Shape, start: int, end: int | None = None) -> int:
    """Product of shape[start:end], UNKNOWN if any of those dimensions is."""
    dims = shape[start:end]
    return UNKNOWN if any(d < 0 for d in dims) else math.prod(dims)


def known(shape: Optional[Shape]) -> bool:
    return shape is not None and all(d >= 0 for d in shape)


def canonical_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _per_top(shapes: Sequence[Shape], n_tops: int) -> list[Optional[Shape]]:
    if len(shapes) == 1:
        return [shapes[0]] * n_tops
    return [shapes[i] if i < len(shapes) else None for i in range(n_tops)]


def _inner_product(layer, b: Shape) -> list[Optional[Shape]]:
    ip = layer.inner_product_param
    axis = canonical_axis(ip.axis, len(b))
    return [b[:axis] + (ip.num_output,)] + [None] * (len(layer.top) - 1)


def _approx_inner_product(layer, bottoms: list[Optional[Shape]]) -> list[Optional[Shape]]:
    """Output as InnerProduct's; a second top is the S x 4 pattern top."""
    tops = _inner_product(layer, bottoms[0])
    if len(tops) > 1:
        tops[1] = (pattern_slices(layer), PATTERN_COLUMNS)
    return tops


def _reshape(layer, b: Shape) -> list[Optional[Shape]]:
    rp = layer.reshape_param
    rank = len(b)
    start = canonical_axis(rp.axis, rank + 1) if rp.axis < 0 else rp.axis
    end = rank if rp.num_axes == -1 else start + rp.num_axes
    dims = list(rp.shape.dim)
    new = list(b[:start])
    infer = None
    for i, d in enumerate(dims):
        if d == 0:
            new.append(b[start + i])
        elif d == -1:
            infer = len(new)
            new.append(1)
        else:
            new.append(int(d))
    new += list(b[end:])
    if infer is not None:
        total = count(b, 0)
        new[infer] = (UNKNOWN if total < 0 or any(d < 0 for d in new)
                      else total // max(1, math.prod(new)))
    return [tuple(new)]


def _flatten(layer, b: Shape) -> list[Optional[Shape]]:
    fp = layer.flatten_param
    a = canonical_axis(fp.axis, len(b))
    e = canonical_axis(fp.end_axis, len(b))
    return [b[:a] + (count(b, a, e + 1),) + b[e + 1:]]


def _spatial(values: Sequence[int], single: int, default: int, n: int) -> list[int]:
    if single:
        return [single] * n
    vals = list(values) or [default]
    return vals * n if len(vals) == 1 else vals[:n]


def _pair(param, name: str, repeated: Sequence[int], default: int, n: int) -> list[int]:
    """Caffe's kernel/pad/stride rule: NAME_h and NAME_w if given, else the list."""
    if param.HasField(f"{name}_h") or param.HasField(f"{name}_w"):
        return [getattr(param, f"{name}_h"), getattr(param, f"{name}_w")]
    return _spatial(repeated, 0, default, n)


def _spatial_out(size: int, out: int) -> int:
    return UNKNOWN if size < 0 else out


def _convolution(layer, b: Shape) -> list[Optional[Shape]]:
    cp = layer.convolution_param
    axis = canonical_axis(cp.axis, len(b))
    spatial = b[axis + 1:]
    n = len(spatial)
    k = _pair(cp, "kernel", cp.kernel_size, 1, n)
    p = _pair(cp, "pad", cp.pad, 0, n)
    s = _pair(cp, "stride", cp.stride, 1, n)
    d = _spatial(cp.dilation, 0, 1, n)
    if layer.type == "Deconvolution":
        out = [s[i] * (spatial[i] - 1) + d[i] * (k[i] - 1) + 1 - 2 * p[i] for i in range(n)]
    else:
        out = [(spatial[i] + 2 * p[i] - (d[i] * (k[i] - 1) + 1)) // s[i] + 1 for i in range(n)]
    out = [_spatial_out(spatial[i], out[i]) for i in range(n)]
    return [b[:axis] + (cp.num_output,) + tuple(out)]


def _pooling(layer, b: Shape) -> list[Optional[Shape]]:
    pp = layer.pooling_param
    if len(b) != 4:
        return [None]
    h, w = b[2], b[3]
    if pp.global_pooling:
        return [b[:2] + (1, 1)] * len(layer.top)
    kh, kw = _pair(pp, "kernel", [pp.kernel_size], 1, 2)
    ph, pw = _pair(pp, "pad", [pp.pad], 0, 2)
    sh, sw = _pair(pp, "stride", [pp.stride], 1, 2)
    floor = "round_mode" in pp.DESCRIPTOR.fields_by_name and pp.round_mode == 1  # FLOOR
    rnd = math.floor if floor else math.ceil

    def out(size: int, k: int, p: int, s: int) -> int:
        o = int(rnd((size + 2 * p - k) / s)) + 1
        if p and (o - 1) * s >= size + p:  # the last window must start inside the input
            o -= 1
        return o
    return [b[:2] + (_spatial_out(h, out(h, kh, ph, sh)),
                     _spatial_out(w, out(w, kw, pw, sw)))] * len(layer.top)


def _concat(layer, shapes: list[Shape]) -> list[Optional[Shape]]:
    cp = layer.concat_param
    axis = cp.concat_dim if cp.HasField("concat_dim") else cp.axis
    axis = canonical_axis(axis, len(shapes[0]))
    total = sum(s[axis] for s in shapes)
    if any(s[axis] < 0 for s in shapes):
        total = UNKNOWN
    return [shapes[0][:axis] + (total,) + shapes[0][axis + 1:]]


def _slice(layer, b: Shape) -> list[Optional[Shape]]:
    sp = layer.slice_param
    axis = sp.slice_dim if sp.HasField("slice_dim") else sp.axis
    axis = canonical_axis(axis, len(b))
    n = len(layer.top)
    points = list(sp.slice_point)
    if b[axis] < 0:
        return [b[:axis] + ((points[i] - ([0] + points)[i]) if i < len(points) else UNKNOWN,)
                + b[axis + 1:] for i in range(n)] if points else [b] * n
    if points:
        bounds = [0] + points + [b[axis]]
    else:
        bounds = [b[axis] * i // n for i in range(n + 1)]
    return [b[:axis] + (bounds[i + 1] - bounds[i],) + b[axis + 1:] for i in range(n)]


ONE_BOTTOM: dict[str, Callable[..., list[Optional[Shape]]]] = {
    "InnerProduct": _inner_product, "ApproxDropoutInnerProduct": _inner_product,
    "DropConnectInnerProduct": _inner_product,
    "Reshape": _reshape, "Flatten": _flatten,
    "Convolution": _convolution, "Deconvolution": _convolution,
    "Pooling": _pooling, "Slice": _slice,
    "Embed": lambda layer, b: [b + (layer.embed_param.num_output,)],
    # Caffe's recurrent layers: x is T x N x ..., h is T x N x num_output.
    "LSTM": lambda layer, b: [b[:2] + (layer.recurrent_param.num_output,)],
    "RNN": lambda layer, b: [b[:2] + (layer.recurrent_param.num_output,)],
    "ApproxDropoutLSTM": lambda layer, b: [b[:2] + (layer.recurrent_param.num_output,)],
}


def _hdf5_shapes(layer, base: Path) -> tuple[list[Optional[Shape]], str]:
    """Top shapes of HDF5Data from the first file its source lists, if readable."""
    param = layer.hdf5_data_param
    why = (f"HDF5Data layer {layer.name!r} takes its shapes from the files listed in "
           f"{param.source!r}")
    source = Path(param.source)
    if not source.is_absolute():
        source = base / source  # Caffe opens it relative to its working folder
    try:
        import h5py  # optional: only to read the shapes
        first = next(line.strip() for line in source.read_text().splitlines() if line.strip())
        first_path = Path(first) if Path(first).is_absolute() else base / first
        with h5py.File(first_path, "r") as f:
            shapes = [(param.batch_size,) + tuple(f[top].shape[1:]) for top in layer.top]
    except Exception:  # missing list or file, no h5py, another layout: unknown
        return [None] * len(layer.top), why + ", which cannot be read here"
    return shapes, ""


# Data layers whose image shape the prototxt gives, or partly gives.
IMAGE_DATA = frozenset(("Data", "ImageData", "WindowData", "MemoryData"))
# Every layer that reads a net's data, for data_as_inputs.
DATA_LAYERS = IMAGE_DATA | {"HDF5Data", "DummyData"}


def _image_data_shapes(layer) -> tuple[list[Optional[Shape]], str]:
    """(data, label) shapes of Data, ImageData, WindowData and MemoryData.

    The batch is in the prototxt; so are the image's height and width where
    the layer crops (crop_size) or resizes (ImageData's new_height/new_width).
    Channels: ImageData's is_color, WindowData's colour images, MemoryData's
    channels; Data's come from its database (UNKNOWN).
    """
    kind, crop = layer.type, layer.transform_param.crop_size
    why = ""
    if kind == "MemoryData":
        mp = layer.memory_data_param
        image: Shape = (mp.batch_size, mp.channels, mp.height, mp.width)
    elif kind == "ImageData":
        ip = layer.image_data_param
        h, w = (crop, crop) if crop else (ip.new_height or UNKNOWN, ip.new_width or UNKNOWN)
        image = (ip.batch_size, 3 if ip.is_color else 1, h, w)
        if h < 0 or w < 0:
            why = (f"ImageData layer {layer.name!r} keeps its images' own size "
                   f"(no crop_size, new_height, new_width)")
    elif kind == "WindowData":
        wp = layer.window_data_param
        crop = crop or wp.crop_size
        image = (wp.batch_size, 3, crop or UNKNOWN, crop or UNKNOWN)
        if not crop:
            why = f"WindowData layer {layer.name!r} has no crop_size"
    else:
        batch = layer.data_param.batch_size
        image = (batch, UNKNOWN, crop or UNKNOWN, crop or UNKNOWN)
        why = (f"Data layer {layer.name!r} reads its "
               f"{'channels' if crop else 'image shape'} from its database")
    shapes: list[Optional[Shape]] = [image, (image[0],)]
    return shapes[:len(layer.top)] + [None] * (len(layer.top) - 2), why


def data_as_inputs(net, phase: int = TRAIN, base: str | os.PathLike[str] | None = None):
    """A copy of net whose data layers in `phase` are Input layers of their shapes.

    For setting a net up where its data is not (a check, a test): the same
    layer names and tops; include/exclude rules and phase are kept, layers of
    the other phase are left as they are. A Data layer's channels, which come
    from its database, are the length of its mean_value list, else 3 (they
    only shape the first layer's weights). Raises PrototxtError naming the
    layer when another dimension is not in the prototxt.
    """
    from .io import PrototxtError  # io imports caffe_pb2 lazily; shapes stays pure

    shapes = infer(net, phase, base)
    out = net.__class__()
    out.CopyFrom(net)
    for layer in out.layer:
        if layer.type not in DATA_LAYERS or not included(layer, phase):
            continue
        tops = []
        for top in layer.top:
            shape = shapes.blobs.get(top)
            if shape is not None and len(shape) > 1 and shape[1] < 0 and layer.type == "Data":
                channels = len(layer.transform_param.mean_value)
                shape = (shape[0], channels if channels > 1 else 3) + shape[2:]
            if not known(shape):
                why = shapes.reason.get(top) or "its shape is not in the prototxt"
                raise PrototxtError(f"data layer {layer.name!r}: the shape of top {top!r} is "
                                    f"unknown ({why}); give it a crop_size (or new_height "
                                    f"and new_width), or an Input layer")
            tops.append(shape)
        replacement = layer.__class__()
        replacement.name, replacement.type = layer.name, "Input"
        replacement.top.extend(layer.top)
        replacement.include.extend(layer.include)
        replacement.exclude.extend(layer.exclude)
        if layer.HasField("phase"):
            replacement.phase = layer.phase
        for shape in tops:
            replacement.input_param.shape.add().dim.extend(shape)
        layer.CopyFrom(replacement)
    return out


def infer(net, phase: int = TRAIN, base: str | os.PathLike[str] | None = None) -> NetShapes:
    """Shapes of every blob of net in phase; base: the folder Caffe would run in."""
    base = Path(base) if base is not None else Path.cwd()
    out = NetShapes(phase)
    for i, name in enumerate(net.input):
        if i < len(net.input_shape):
            out.blobs[name] = tuple(int(d) for d in net.input_shape[i].dim)
        elif len(net.input_dim) >= 4 * (i + 1):
            out.blobs[name] = tuple(int(d) for d in net.input_dim[4 * i:4 * i + 4])
        else:
            out.blobs[name] = None
            out.reason[name] = f"net input {name!r} has no shape"
    for index, layer in enumerate(net.layer):
        if not included(layer, phase):
            continue
        bottoms: list[Optional[Shape]] = []
        reasons: list[str] = []
        for b in layer.bottom:
            if b not in out.blobs:
                bottoms.append(None)
                reasons.append(f"no layer before {layer.name!r} produces blob {b!r}")
            else:
                bottoms.append(out.blobs[b])
                reasons.append(out.reason.get(b, ""))
        out.bottoms[index] = bottoms
        out.bottom_reasons[index] = reasons
        tops, why = _tops(layer, bottoms, reasons, base)
        for t, shape in zip(layer.top, tops):
            out.blobs[t] = shape
            if shape is None:
                out.reason[t] = why or f"{layer.type} layer {layer.name!r} does not say it"
            elif not known(shape):  # why some dimension is UNKNOWN
                out.reason[t] = why or next((r for r in reasons if r), "")
            else:
                out.reason.pop(t, None)
    return out


def _tops(layer, bottoms: list[Optional[Shape]], reasons: list[str],
          base: Path) -> tuple[list[Optional[Shape]], str]:
    n = len(layer.top)
    kind = layer.type
    if kind == "Input":
        shapes = [tuple(int(d) for d in s.dim) for s in layer.input_param.shape]
        return (_per_top(shapes, n) if shapes else [None] * n), ""
    if kind == "DummyData":
        dp = layer.dummy_data_param
        shapes = [tuple(int(d) for d in s.dim) for s in dp.shape]
        if not shapes and len(dp.num):
            shapes = [(dp.num[i], dp.channels[i], dp.height[i], dp.width[i])
                      for i in range(len(dp.num))]
        return (_per_top(shapes, n) if shapes else [None] * n), ""
    if kind == "HDF5Data":
        return _hdf5_shapes(layer, base)
    if kind in IMAGE_DATA:
        return _image_data_shapes(layer)
    if not bottoms:
        return [None] * n, f"{kind} layer {layer.name!r} does not state its output shape"
    # The layers of ONE_BOTTOM shape their tops from the first bottom alone
    # (cont of a recurrent layer, the pattern bottom of an approximate one).
    needed = bottoms[:1] if kind in ONE_BOTTOM else bottoms
    if bottoms[0] is None and kind in ("InnerProduct", "ApproxDropoutInnerProduct") and \
            layer.inner_product_param.axis >= 0:
        # Whatever its input, the output is (..., num_output): the next
        # layer's input size is known.
        axis = layer.inner_product_param.axis
        tops = _inner_product(layer, (UNKNOWN,) * (axis + 1))
        if kind == "ApproxDropoutInnerProduct" and n > 1:
            tops[1] = (pattern_slices(layer), PATTERN_COLUMNS)
        return (tops + [None] * n)[:n], reasons[0]
    if any(b is None for b in needed):
        first = next(r for b, r in zip(needed, reasons) if b is None)
        return [None] * n, first
    try:
        if kind in SAME_SHAPE:
            return [bottoms[0]] * n, ""
        if kind == "Concat":
            return _concat(layer, bottoms), ""
        if kind == "ApproxDropoutInnerProduct":
            return (_approx_inner_product(layer, bottoms) + [None] * n)[:n], ""
        if kind in ONE_BOTTOM:
            tops = ONE_BOTTOM[kind](layer, bottoms[0])
            return (tops + [None] * n)[:n], ""
    except (IndexError, ValueError, ZeroDivisionError):
        pass  # parameters Caffe would refuse; the shape stays unknown
    return [None] * n, f"the output shape of {kind} layer {layer.name!r} is not inferred here"
