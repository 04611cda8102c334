"""Prototxt text for the paper's nets, in stock and approximate flavours.

The files under prototxt/ are these functions' output with the paper's
defaults; benchmarks call the functions for other sizes and rates.
"""
from __future__ import annotations

FLAVOURS = ("stock", "rdp", "tdp")

# Methods of the experiments and benchmarks: a flavour plus approx_dropout_param
# fields, so that the layers' defaults and the paper's settings sit side by side.
METHOD_HELP = ("stock; rdp / tdp: the layers' defaults; rdp_sS / tdp_sS: S batch slices "
               "(tdp: diagonal tiles); tdp_s1_rowmajor: the paper's TDP (row-major tiles, "
               "one pattern per batch); rdp_paper: the paper's RDP (its searched "
               "distribution, one pattern per batch)")


def method_settings(method: str) -> tuple[str, dict[str, object], bool]:
    """(nets flavour, approx_dropout_param fields, paper's distribution?) of a method."""
    fixed = {"stock": ("stock", {}, False), "rdp": ("rdp", {}, False),
             "tdp": ("tdp", {}, False),
             "rdp_paper": ("rdp", {"batch_slices": 1}, True),
             "tdp_s1_rowmajor": ("tdp", {"batch_slices": 1, "tile_order": "ROW_MAJOR"}, False)}
    if method in fixed:
        return fixed[method]
    flavour, _, slices = method.partition("_s")
    if flavour in ("rdp", "tdp") and slices.isdigit() and int(slices) >= 1:
        return flavour, {"batch_slices": int(slices)}, False
    raise ValueError(f"unknown method {method!r} ({METHOD_HELP})")


def method_label(method: str) -> str:
    named = {"stock": "stock Dropout", "rdp": "RDP (default: 2 slices)",
             "tdp": "TDP (default: diagonal, 1 pattern/batch)",
             "rdp_s1": "RDP, 1 pattern/batch (paper)",
             "rdp_paper": "RDP, paper's dist., 1 pattern/batch",
             "tdp_s1_rowmajor": "TDP, row-major, 1 pattern/batch (paper)"}
    if method in named:
        return named[method]
    flavour, fields, _ = method_settings(method)
    tiles = ", diagonal" if flavour == "tdp" else ""
    slices = fields["batch_slices"]
    return f"{flavour.upper()}{tiles}, " + ("1 pattern/batch" if slices == 1
                                            else f"{slices} slices")


def mlp_for_method(method: str, hidden: tuple[int, ...], rates: tuple[float, ...],
                   **options) -> str:
    """mlp() for an experiment method (see METHOD_HELP); options go to mlp()."""
    flavour, fields, paper_distribution = method_settings(method)
    text = mlp(flavour, hidden, rates, approx_fields=fields or None, **options)
    if paper_distribution:
        # Algorithm 1 with N = the widest layer (the natural largest period);
        # imported here because it needs Caffe's generated caffe_pb2
        from google.protobuf import text_format

        from . import fill_distribution, prototxt_io
        net = text_format.Parse(text, prototxt_io.caffe_pb2().NetParameter())
        fill_distribution.fill_distributions(net, max_dp=max(hidden), method="paper")
        text = prototxt_io.net_to_text(net, "pattern_distribution: the paper's search")
    return text


def _fc(name: str, bottom: str, num_output: int, layer_type: str = "InnerProduct",
        approx: str = "") -> str:
    return (f'layer {{\n  name: "{name}" type: "{layer_type}" bottom: "{bottom}" '
            f'top: "{name}"\n  inner_product_param {{ num_output: {num_output} '
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
        approx_fields: dict[str, object] | None = None) -> str:
    """784-H-...-10 MLP with dropout after each hidden ReLU.

    stock: InnerProduct -> ReLU -> Dropout; rdp / tdp: ApproxDropoutInnerProduct
    (ROW/OUTPUT or TILE) -> ReLU, which drops the same neurons' work up front
    (ReLU(0) = 0 and the 1/(1-p) scale is positive, so the order is free).
    Fed by DummyData, or with sources = (train list, test list) by HDF5Data
    (TRAIN shuffled, TEST in order) with an Accuracy layer in TEST.
    approx_fields adds approx_dropout_param fields to every approximate layer,
    e.g. {"batch_slices": 1, "tile_order": "ROW_MAJOR"} for the paper's TDP.
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
    if len(rates) != len(hidden):
        raise ValueError("one dropout rate per hidden layer is needed")
    sizes = "-".join(str(n) for n in (inputs, *hidden, classes))
    head = (f'# The paper\'s MLP ({sizes}, batch {batch}), {flavour} dropout '
            f'{"/".join(f"{r:g}" for r in rates)};\n')
    if sources is None:
        text = [head + f'# DummyData input, so that `caffe time` needs no data files.\n'
                f'name: "mlp_{flavour}"\n'
                f'layer {{\n  name: "data" type: "DummyData" top: "data" top: "label"\n'
                f'  dummy_data_param {{\n'
                f'    shape {{ dim: {batch} dim: {inputs} }} '
                f'data_filler {{ type: "uniform" min: 0 max: 1 }}\n'
                f'    shape {{ dim: {batch} }} data_filler {{ type: "constant" value: 3 }}\n'
                f'  }}\n}}\n']
    else:
        text = [head + f'name: "mlp_{flavour}"\n']
        for phase, source, size, shuffle in (("TRAIN", sources[0], batch, " shuffle: true"),
                                             ("TEST", sources[1], test_batch, "")):
            text.append(f'layer {{\n  name: "data" type: "HDF5Data" top: "data" top: "label" '
                        f'include {{ phase: {phase} }}\n'
                        f'  hdf5_data_param {{ source: "{source}" batch_size: {size}{shuffle} }}\n'
                        f'}}\n')
    bottom = "data"
    for i, (width, rate) in enumerate(zip(hidden, rates), start=1):
        fc, relu = f"fc{i}", f"relu{i}"
        if flavour == "stock":
            text.append(_fc(fc, bottom, width))
            text.append(f'layer {{ name: "{relu}" type: "ReLU" bottom: "{fc}" top: "{fc}" }}\n')
            text.append(f'layer {{ name: "drop{i}" type: "Dropout" bottom: "{fc}" '
                        f'top: "{fc}" dropout_param {{ dropout_ratio: {rate:g} }} }}\n')
        else:
            text.append(_fc(fc, bottom, width, "ApproxDropoutInnerProduct",
                            _approx_param(flavour, rate, approx_fields)))
            text.append(f'layer {{ name: "{relu}" type: "ReLU" bottom: "{fc}" top: "{fc}" }}\n')
        bottom = fc
    out = f"fc{len(hidden) + 1}"
    text.append(_fc(out, bottom, classes))
    text.append(f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "{out}" '
                f'bottom: "label" top: "loss" }}\n')
    if sources is not None:
        text.append(f'layer {{ name: "accuracy" type: "Accuracy" bottom: "{out}" '
                    f'bottom: "label" top: "accuracy" include {{ phase: TEST }} }}\n')
    return "".join(text)


def layer_pair(variant: str, size: int, rate: float, batch: int = 128) -> str:
    """One K = N = size fully connected layer with dropout, for timing.

    variant: "stock_output" (InnerProduct -> Dropout), "stock_input"
    (Dropout -> InnerProduct), or "row_output", "row_input", "tile" (one
    ApproxDropoutInnerProduct). force_backward makes backward reach the input,
    as it does for a hidden layer.
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
    pattern = {"row_output": "ROW side: OUTPUT", "row_input": "ROW side: INPUT",
               "tile": "TILE"}.get(variant)
    if pattern is None:
        raise ValueError(f"unknown variant {variant!r}")
    return head + (f'layer {{ name: "fc" type: "ApproxDropoutInnerProduct" bottom: "data" '
                   f'top: "fc" {ip}\n  approx_dropout_param {{ dropout_ratio: {rate:g} '
                   f'pattern: {pattern} }} }}\n')


LM_FLAVOURS = ("stock", "row", "tile")


def lm(flavour: str, hidden: int = 1500, num_layers: int = 2, rate: float = 0.5,
       batch: int = 20, steps: int = 35, vocab: int = 10000, init: float = 0.04,
       sources: tuple[str, str] | None = None,
       approx_fields: dict[str, object] | None = None) -> str:
    """Word-level LSTM language model (Zaremba et al. 2014, the paper's Table II).

    stock: Embed -> Dropout -> (LSTM -> Dropout) x num_layers -> InnerProduct
    (vocab) -> SoftmaxWithLoss. row / tile: Embed -> ApproxDropoutLSTM x
    num_layers -> ApproxDropoutInnerProduct (ROW side INPUT, or TILE) ->
    SoftmaxWithLoss: the same dropout sites (each layer's input), the same
    layer names and parameter shapes. Blobs are time-major (steps x batch);
    DummyData feeds random words, so `caffe time` needs no data files, or
    with sources = (train list, test list) HDF5Data reads the corpus of
    approx_dropout.data_text in order (TRAIN and TEST phases). approx_fields
    adds approx_dropout_param fields to every approximate layer.
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
    for i in range(1, num_layers + 1):
        name = f"lstm{i}"
        text.append(f'layer {{\n  name: "{name}" type: "{lstm_type}" bottom: "{bottom}" '
                    f'bottom: "cont" top: "{name}"\n'
                    f'  recurrent_param {{ num_output: {hidden} weight_filler {uniform} '
                    f'bias_filler {{ type: "constant" value: 0 }} }}\n{approx}}}\n')
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
