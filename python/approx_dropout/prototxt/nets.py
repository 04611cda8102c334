"""Prototxt text for the paper's nets, in stock and approximate flavours.

The files under prototxt/ are these functions' output with the paper's
defaults; benchmarks call the functions for other sizes and rates.
"""
from __future__ import annotations

import re
from typing import NamedTuple

FLAVOURS = ("stock", "rdp", "tdp")
RDP_LAYOUTS = ("STRIDED", "BLOCK")  # approx_dropout_param.layout (ROW only)

# Methods of the experiments and benchmarks: a flavour plus approx_dropout_param
# fields, so that the layers' defaults and the paper's settings sit side by side.
# Every RDP method names its layout, so that a method keeps the meaning it had
# when its results were recorded whatever the layer's default becomes.
METHOD_HELP = ("stock; rdp / rdp_sS: strided layout (the paper's; unit j kept iff "
               "j mod dp = b), the layer's default slices or S batch slices; "
               "rdp_block / rdp_block_sS: block layout (dp contiguous blocks); "
               "rdp_prop / rdp_prop_sS: block layout, each layer's pattern passed to the "
               "next, which skips the inputs it drops (the classifier too); "
               "rdp_strided_prop / rdp_strided_prop_sS: the same with the strided layout; "
               "rdp_paper: the paper's RDP (strided, its searched distribution, one "
               "pattern per batch); tdp / tdp_sS: the layer's defaults / S slices "
               "(diagonal tiles); tdp_s1_rowmajor: the paper's TDP (row-major tiles, "
               "one pattern per batch)")

_RDP_METHOD = re.compile(r"rdp(?P<variant>_block|_prop|_strided_prop)?"
                         r"(?:_s(?P<slices>[1-9][0-9]*))?")
_TDP_METHOD = re.compile(r"tdp(?:_s(?P<slices>[1-9][0-9]*))?")
# variant -> (layout, propagate)
_RDP_VARIANTS = {None: ("STRIDED", False), "_block": ("BLOCK", False),
                 "_prop": ("BLOCK", True), "_strided_prop": ("STRIDED", True)}


class MethodSettings(NamedTuple):
    flavour: str                  # one of FLAVOURS
    fields: dict[str, object]     # approx_dropout_param fields of every approximate layer
    paper_distribution: bool      # the paper's searched distribution (N = widest layer)
    propagate: bool = False       # mlp(propagate=True): patterns wired layer to layer


def method_settings(method: str) -> MethodSettings:
    """The nets flavour, approx_dropout_param fields and options of a method."""
    if method == "stock":
        return MethodSettings("stock", {}, False)
    if method == "rdp_paper":
        return MethodSettings("rdp", {"batch_slices": 1, "layout": "STRIDED"}, True)
    if method == "tdp_s1_rowmajor":
        return MethodSettings("tdp", {"batch_slices": 1, "tile_order": "ROW_MAJOR"}, False)
    rdp = _RDP_METHOD.fullmatch(method)
    if rdp:
        layout, propagate = _RDP_VARIANTS[rdp.group("variant")]
        fields: dict[str, object] = {}
        if rdp.group("slices"):
            fields["batch_slices"] = int(rdp.group("slices"))
        fields["layout"] = layout
        return MethodSettings("rdp", fields, False, propagate)
    tdp = _TDP_METHOD.fullmatch(method)
    if tdp:  # TILE has no layout (the layer refuses one)
        fields = {"batch_slices": int(tdp.group("slices"))} if tdp.group("slices") else {}
        return MethodSettings("tdp", fields, False)
    raise ValueError(f"unknown method {method!r} ({METHOD_HELP})")


def method_label(method: str) -> str:
    """A method's name in tables and plots: layout, slices and propagation."""
    settings = method_settings(method)
    fields = settings.fields
    if settings.flavour == "stock":
        return "stock Dropout"
    slices = fields.get("batch_slices")
    if settings.flavour == "tdp":
        named = {"tdp": "TDP (default: diagonal, 1 pattern/batch)",
                 "tdp_s1_rowmajor": "TDP, row-major, 1 pattern/batch (paper)"}
        if method in named:
            return named[method]
        return "TDP, diagonal, " + ("1 pattern/batch" if slices == 1 else f"{slices} slices")
    layout = str(fields["layout"])
    parts = ["RDP", layout.lower()]
    if settings.paper_distribution:
        parts.append("paper's dist.")
    parts.append("2 slices (layer default)" if slices is None
                 else "1 pattern/batch" if slices == 1 else f"{slices} slices")
    if settings.propagate:
        parts.append("propagated")
    label = ", ".join(parts)
    paper_settings = layout == "STRIDED" and slices == 1 and not settings.propagate
    return label + (" (paper)" if paper_settings and not settings.paper_distribution else "")


def mlp_for_method(method: str, hidden: tuple[int, ...], rates: tuple[float, ...],
                   **options) -> str:
    """mlp() for an experiment method (see METHOD_HELP); options go to mlp()."""
    settings = method_settings(method)
    text = mlp(settings.flavour, hidden, rates, approx_fields=settings.fields or None,
               propagate=settings.propagate, **options)
    if settings.paper_distribution:
        # Algorithm 1 with N = the widest layer (the natural largest period);
        # imported here because it needs Caffe's generated caffe_pb2
        from google.protobuf import text_format

        from . import fill
        from . import io as prototxt_io
        net = text_format.Parse(text, prototxt_io.caffe_pb2().NetParameter())
        # a classifier that only skips (dropout_ratio 0) keeps the layer's default
        dropping = [layer.name for layer in net.layer
                    if layer.type in fill.APPROX_LAYER_TYPES
                    and layer.approx_dropout_param.dropout_ratio > 0]
        fill.fill_distributions(net, dropping, max_dp=max(hidden), method="paper")
        text = prototxt_io.net_to_text(net, "pattern_distribution: the paper's search")
    return text


def _fc(name: str, bottom: str, num_output: int, layer_type: str = "InnerProduct",
        approx: str = "", pattern_bottom: str | None = None,
        pattern_top: str | None = None) -> str:
    bottoms = f'bottom: "{bottom}" ' + (f'bottom: "{pattern_bottom}" ' if pattern_bottom else "")
    tops = f'top: "{name}"' + (f' top: "{pattern_top}"' if pattern_top else "")
    return (f'layer {{\n  name: "{name}" type: "{layer_type}" {bottoms}{tops}\n'
            f'  inner_product_param {{ num_output: {num_output} '
            f'weight_filler {{ type: "xavier" }} bias_filler {{ type: "constant" }} }}\n'
            f'{approx}}}\n')


def _approx_param(flavour: str, rate: float, fields: dict[str, object] | None = None) -> str:
    pattern = "ROW side: OUTPUT" if flavour == "rdp" else "TILE"
    return (f"  approx_dropout_param {{ dropout_ratio: {rate:g} pattern: {pattern}"
            f"{_fields_text(fields)} }}\n")


def _fields_text(fields: dict[str, object] | None) -> str:
    """' name: value' for each extra approx_dropout_param field."""
    return "".join(f" {name}: {value}" for name, value in (fields or {}).items())


def mlp(flavour: str, hidden: tuple[int, ...] = (2048, 2048),
        rates: tuple[float, ...] = (0.7, 0.7), batch: int = 128,
        inputs: int = 784, classes: int = 10,
        sources: tuple[str, str] | None = None, test_batch: int = 100,
        approx_fields: dict[str, object] | None = None, propagate: bool = False) -> str:
    """784-H-...-10 MLP with dropout after each hidden ReLU.

    stock: InnerProduct -> ReLU -> Dropout; rdp / tdp: ApproxDropoutInnerProduct
    (ROW/OUTPUT or TILE) -> ReLU, which drops the same neurons' work up front
    (ReLU(0) = 0 and the 1/(1-p) scale is positive, so the order is free).
    Fed by DummyData, or with sources = (train list, test list) by HDF5Data
    (TRAIN shuffled, TEST in order) with an Accuracy layer in TEST.
    approx_fields adds approx_dropout_param fields to every approximate layer,
    e.g. {"batch_slices": 1, "tile_order": "ROW_MAJOR"} for the paper's TDP.

    propagate (rdp only): every approximate layer also outputs its pattern
    ("fcI_pattern") and the next layer takes it as a second bottom, so it
    skips the input columns that were dropped; the classifier becomes an
    ApproxDropoutInnerProduct with dropout_ratio 0 that only skips. Same
    layer names and parameters, and the same numbers as without (only faster).
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
    if len(rates) != len(hidden):
        raise ValueError("one dropout rate per hidden layer is needed")
    if propagate and flavour != "rdp":
        # TILE drops weight tiles, never a whole unit, so no input column is
        # zero for the next layer to skip
        raise ValueError(f"propagate applies to flavour rdp only, got {flavour!r}")
    sizes = "-".join(str(n) for n in (inputs, *hidden, classes))
    name = f"mlp_{flavour}_propagated" if propagate else f"mlp_{flavour}"
    head = (f'# The paper\'s MLP ({sizes}, batch {batch}), {flavour} dropout '
            f'{"/".join(f"{r:g}" for r in rates)};\n')
    if propagate:
        head += ("# each layer passes its pattern (top fcI_pattern) to the next, which "
                 "skips the inputs it dropped;\n")
    if sources is None:
        text = [head + f'# DummyData input, so that `caffe time` needs no data files.\n'
                f'name: "{name}"\n'
                f'layer {{\n  name: "data" type: "DummyData" top: "data" top: "label"\n'
                f'  dummy_data_param {{\n'
                f'    shape {{ dim: {batch} dim: {inputs} }} '
                f'data_filler {{ type: "uniform" min: 0 max: 1 }}\n'
                f'    shape {{ dim: {batch} }} data_filler {{ type: "constant" value: 3 }}\n'
                f'  }}\n}}\n']
    else:
        text = [head + f'name: "{name}"\n']
        for phase, source, size, shuffle in (("TRAIN", sources[0], batch, " shuffle: true"),
                                             ("TEST", sources[1], test_batch, "")):
            text.append(f'layer {{\n  name: "data" type: "HDF5Data" top: "data" top: "label" '
                        f'include {{ phase: {phase} }}\n'
                        f'  hdf5_data_param {{ source: "{source}" batch_size: {size}{shuffle} }}\n'
                        f'}}\n')
    bottom = "data"
    pattern = None  # the previous layer's pattern top, when propagating
    for i, (width, rate) in enumerate(zip(hidden, rates), start=1):
        fc, relu = f"fc{i}", f"relu{i}"
        if flavour == "stock":
            text.append(_fc(fc, bottom, width))
            text.append(f'layer {{ name: "{relu}" type: "ReLU" bottom: "{fc}" top: "{fc}" }}\n')
            text.append(f'layer {{ name: "drop{i}" type: "Dropout" bottom: "{fc}" '
                        f'top: "{fc}" dropout_param {{ dropout_ratio: {rate:g} }} }}\n')
        else:
            own_pattern = f"{fc}_pattern" if propagate else None
            text.append(_fc(fc, bottom, width, "ApproxDropoutInnerProduct",
                            _approx_param(flavour, rate, approx_fields), pattern, own_pattern))
            text.append(f'layer {{ name: "{relu}" type: "ReLU" bottom: "{fc}" top: "{fc}" }}\n')
            pattern = own_pattern
        bottom = fc
    out = f"fc{len(hidden) + 1}"
    if propagate:
        text.append(_fc(out, bottom, classes, "ApproxDropoutInnerProduct",
                        _approx_param(flavour, 0.0, approx_fields), pattern))
    else:
        text.append(_fc(out, bottom, classes))
    text.append(f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "{out}" '
                f'bottom: "label" top: "loss" }}\n')
    if sources is not None:
        text.append(f'layer {{ name: "accuracy" type: "Accuracy" bottom: "{out}" '
                    f'bottom: "label" top: "accuracy" include {{ phase: TEST }} }}\n')
    return "".join(text)


# One ApproxDropoutInnerProduct per variant: its approx_dropout_param fields
# besides dropout_ratio. row_output / row_input leave the layout to the layer.
SINGLE_LAYER_VARIANTS = {
    "row_output": "pattern: ROW side: OUTPUT",
    "row_input": "pattern: ROW side: INPUT",
    "row_output_strided": "pattern: ROW side: OUTPUT layout: STRIDED",
    "row_input_strided": "pattern: ROW side: INPUT layout: STRIDED",
    "row_output_block": "pattern: ROW side: OUTPUT layout: BLOCK",
    "row_input_block": "pattern: ROW side: INPUT layout: BLOCK",
    "tile": "pattern: TILE",
}
STOCK_VARIANTS = ("stock_output", "stock_input")
PAIR_VARIANTS = ("pair_stock", "pair_propagated")


def layer_pair(variant: str, size: int, rate: float, batch: int = 128) -> str:
    """Fully connected K = N = size layers with dropout, for timing.

    One layer: "stock_output" (InnerProduct -> Dropout), "stock_input"
    (Dropout -> InnerProduct), or one ApproxDropoutInnerProduct of
    SINGLE_LAYER_VARIANTS ("row_output", "row_input": the layer's default
    layout; "row_output_strided" ... "row_input_block": that layout; "tile"),
    its layer and top named "fc". Two layers, to time the second ("fc2")
    as a consumer of the first's pattern: "pair_stock" (InnerProduct -> ReLU
    -> Dropout, twice) and "pair_propagated" (ApproxDropoutInnerProduct ROW,
    BLOCK -> ReLU, twice, the second taking the first's pattern). force_backward
    makes backward reach the input, as it does for a hidden layer.
    """
    head = (f'name: "pair_{variant}"\nforce_backward: true\n'
            f'layer {{ name: "data" type: "Input" top: "data" '
            f'input_param {{ shape {{ dim: {batch} dim: {size} }} }} }}\n')
    ip = ('inner_product_param { num_output: %d weight_filler { type: "gaussian" '
          'std: 0.01 } bias_filler { type: "constant" } }' % size)
    if variant == "stock_output":
        return head + (f'layer {{ name: "fc" type: "InnerProduct" bottom: "data" top: "fc" {ip} }}\n'
                       f'layer {{ name: "drop" type: "Dropout" bottom: "fc" top: "fc" '
                       f'dropout_param {{ dropout_ratio: {rate:g} }} }}\n')
    if variant == "stock_input":
        return head + (f'layer {{ name: "drop" type: "Dropout" bottom: "data" top: "drop" '
                       f'dropout_param {{ dropout_ratio: {rate:g} }} }}\n'
                       f'layer {{ name: "fc" type: "InnerProduct" bottom: "drop" top: "fc" {ip} }}\n')
    if variant == "pair_stock":
        return head + "".join(
            f'layer {{ name: "fc{i}" type: "InnerProduct" bottom: "{bottom}" top: "fc{i}" {ip} }}\n'
            f'layer {{ name: "relu{i}" type: "ReLU" bottom: "fc{i}" top: "fc{i}" }}\n'
            f'layer {{ name: "drop{i}" type: "Dropout" bottom: "fc{i}" top: "fc{i}" '
            f'dropout_param {{ dropout_ratio: {rate:g} }} }}\n'
            for i, bottom in ((1, "data"), (2, "fc1")))
    if variant == "pair_propagated":
        approx = (f'approx_dropout_param {{ dropout_ratio: {rate:g} pattern: ROW side: OUTPUT '
                  f'layout: BLOCK }}')
        return head + (
            f'layer {{ name: "fc1" type: "ApproxDropoutInnerProduct" bottom: "data" top: "fc1" '
            f'top: "fc1_pattern" {ip}\n  {approx} }}\n'
            f'layer {{ name: "relu1" type: "ReLU" bottom: "fc1" top: "fc1" }}\n'
            f'layer {{ name: "fc2" type: "ApproxDropoutInnerProduct" bottom: "fc1" '
            f'bottom: "fc1_pattern" top: "fc2" {ip}\n  {approx} }}\n'
            f'layer {{ name: "relu2" type: "ReLU" bottom: "fc2" top: "fc2" }}\n')
    fields = SINGLE_LAYER_VARIANTS.get(variant)
    if fields is None:
        raise ValueError(f"unknown variant {variant!r}")
    return head + (f'layer {{ name: "fc" type: "ApproxDropoutInnerProduct" bottom: "data" '
                   f'top: "fc" {ip}\n  approx_dropout_param {{ dropout_ratio: {rate:g} '
                   f'{fields} }} }}\n')


LM_FLAVOURS = ("stock", "row", "tile")


def lm(flavour: str, hidden: int = 1500, num_layers: int = 2, rate: float = 0.5,
       batch: int = 20, steps: int = 35, vocab: int = 10000, init: float = 0.04,
       sources: tuple[str, str] | None = None,
       approx_fields: dict[str, object] | None = None, recurrent: float = 0.0,
       recurrent_pattern: str | None = None) -> str:
    """Word-level LSTM language model (Zaremba et al. 2014, the paper's Table II).

    stock: Embed -> Dropout -> (LSTM -> Dropout) x num_layers -> InnerProduct
    (vocab) -> SoftmaxWithLoss. row / tile: Embed -> ApproxDropoutLSTM x
    num_layers -> ApproxDropoutInnerProduct (ROW side INPUT, or TILE) ->
    SoftmaxWithLoss: the same dropout sites (each layer's input), the same
    layer names and parameter shapes. Blobs are time-major (steps x batch);
    DummyData feeds random words, so `caffe time` needs no data files, or
    with sources = (train list, test list) HDF5Data reads the corpus of
    approx_dropout.data.text in order (TRAIN and TEST phases). approx_fields
    adds approx_dropout_param fields to every approximate layer. recurrent > 0
    (row / tile only) also drops hidden units on each ApproxDropoutLSTM's
    recurrent path (recurrent_dropout_ratio), with recurrent_pattern
    "PER_STEP" (the layer's default) or "PER_SEQUENCE".
    """
    if flavour not in LM_FLAVOURS:
        raise ValueError(f"flavour must be one of {LM_FLAVOURS}, got {flavour!r}")
    if num_layers < 1:
        raise ValueError("num_layers must be at least 1")
    uniform = f'{{ type: "uniform" min: {-init:g} max: {init:g} }}'
    approx = ("" if flavour == "stock" else
              f'  approx_dropout_param {{ dropout_ratio: {rate:g}'
              f'{" pattern: TILE" if flavour == "tile" else ""}{_fields_text(approx_fields)} }}\n')
    text = [f"# Word-level LSTM LM: {num_layers} x {hidden}, vocabulary {vocab}, "
            f"batch {batch}, {steps} steps, dropout {rate:g}, {flavour};\n"]
    if sources is None:
        text.append(
            f"# DummyData input (random words), so that `caffe time` needs no data files.\n"
            f'name: "lm_{flavour}"\n'
            f'layer {{\n  name: "data" type: "DummyData" top: "words" top: "cont" top: "label"\n'
            f'  dummy_data_param {{\n'
            f'    shape {{ dim: {steps} dim: {batch} }} '
            f'data_filler {{ type: "uniform" min: 0 max: {vocab - 1} }}\n'
            f'    shape {{ dim: {steps} dim: {batch} }} '
            f'data_filler {{ type: "constant" value: 1 }}\n'
            f'    shape {{ dim: {steps} dim: {batch} }} '
            f'data_filler {{ type: "uniform" min: 0 max: {vocab - 1} }}\n'
            f'  }}\n}}\n')
    else:
        # HDF5Data rows are time steps and columns streams: batch_size = steps
        text.append(f'name: "lm_{flavour}"\n')
        for phase, source in zip(("TRAIN", "TEST"), sources):
            text.append(f'layer {{\n  name: "data" type: "HDF5Data" top: "words" top: "cont" '
                        f'top: "label" include {{ phase: {phase} }}\n'
                        f'  hdf5_data_param {{ source: "{source}" batch_size: {steps} }}\n}}\n')
    text.append(f'layer {{\n  name: "embed" type: "Embed" bottom: "words" top: "embed"\n'
                f'  embed_param {{ num_output: {hidden} input_dim: {vocab} bias_term: false '
                f'weight_filler {uniform} }}\n}}\n')

    def dropout(blob: str, name: str) -> str:
        if flavour != "stock":
            return ""
        return (f'layer {{ name: "{name}" type: "Dropout" bottom: "{blob}" top: "{blob}" '
                f'dropout_param {{ dropout_ratio: {rate:g} }} }}\n')

    text.append(dropout("embed", "drop0"))
    bottom = "embed"
    lstm_type = "LSTM" if flavour == "stock" else "ApproxDropoutLSTM"
    lstm_approx = approx
    if recurrent:
        if flavour == "stock" or not 0 < recurrent < 1:
            raise ValueError("recurrent dropout needs flavour row or tile and a rate in (0, 1)")
        extra = f" recurrent_dropout_ratio: {recurrent:g}" + (
            f" recurrent_pattern: {recurrent_pattern}" if recurrent_pattern else "")
        lstm_approx = approx.replace(" }\n", extra + " }\n")
    for i in range(1, num_layers + 1):
        name = f"lstm{i}"
        text.append(f'layer {{\n  name: "{name}" type: "{lstm_type}" bottom: "{bottom}" '
                    f'bottom: "cont" top: "{name}"\n'
                    f'  recurrent_param {{ num_output: {hidden} weight_filler {uniform} '
                    f'bias_filler {{ type: "constant" value: 0 }} }}\n{lstm_approx}}}\n')
        text.append(dropout(name, f"drop{i}"))
        bottom = name
    ip_type = "InnerProduct" if flavour == "stock" else "ApproxDropoutInnerProduct"
    decoder_approx = approx.replace(" }\n", " side: INPUT }\n") if flavour == "row" else approx
    text.append(f'layer {{\n  name: "decoder" type: "{ip_type}" bottom: "{bottom}" '
                f'top: "decoder"\n'
                f'  inner_product_param {{ num_output: {vocab} axis: 2 weight_filler {uniform} '
                f'bias_filler {{ type: "constant" value: 0 }} }}\n{decoder_approx}}}\n')
    text.append('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "decoder" '
                'bottom: "label" top: "loss" softmax_param { axis: 2 } }\n')
    return "".join(text)
