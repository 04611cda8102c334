"""Prototxt text for the paper's nets, in stock and approximate flavours.

The files under prototxt/ are these functions' output with the paper's
defaults; benchmarks call the functions for other sizes and rates.
"""
from __future__ import annotations

FLAVOURS = ("stock", "rdp", "tdp")


def _fc(name: str, bottom: str, num_output: int, layer_type: str = "InnerProduct",
        approx: str = "") -> str:
    return (f'layer {{\n  name: "{name}" type: "{layer_type}" bottom: "{bottom}" '
            f'top: "{name}"\n  inner_product_param {{ num_output: {num_output} '
            f'weight_filler {{ type: "xavier" }} bias_filler {{ type: "constant" }} }}\n'
            f'{approx}}}\n')


def _approx_param(flavour: str, rate: float) -> str:
    pattern = "ROW side: OUTPUT" if flavour == "rdp" else "TILE"
    return f"  approx_dropout_param {{ dropout_ratio: {rate:g} pattern: {pattern} }}\n"


def mlp(flavour: str, hidden: tuple[int, ...] = (2048, 2048),
        rates: tuple[float, ...] = (0.7, 0.7), batch: int = 128,
        inputs: int = 784, classes: int = 10) -> str:
    """784-H-...-10 MLP with dropout after each hidden ReLU, fed by DummyData.

    stock: InnerProduct -> ReLU -> Dropout; rdp / tdp: ApproxDropoutInnerProduct
    (ROW/OUTPUT or TILE) -> ReLU, which drops the same neurons' work up front
    (ReLU(0) = 0 and the 1/(1-p) scale is positive, so the order is free).
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
    if len(rates) != len(hidden):
        raise ValueError("one dropout rate per hidden layer is needed")
    sizes = "-".join(str(n) for n in (inputs, *hidden, classes))
    text = [f'# The paper\'s MLP ({sizes}, batch {batch}), {flavour} dropout '
            f'{"/".join(f"{r:g}" for r in rates)};\n'
            f'# DummyData input, so that `caffe time` needs no data files.\n'
            f'name: "mlp_{flavour}"\n'
            f'layer {{\n  name: "data" type: "DummyData" top: "data" top: "label"\n'
            f'  dummy_data_param {{\n'
            f'    shape {{ dim: {batch} dim: {inputs} }} '
            f'data_filler {{ type: "uniform" min: 0 max: 1 }}\n'
            f'    shape {{ dim: {batch} }} data_filler {{ type: "constant" value: 3 }}\n'
            f'  }}\n}}\n']
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
                            _approx_param(flavour, rate)))
            text.append(f'layer {{ name: "{relu}" type: "ReLU" bottom: "{fc}" top: "{fc}" }}\n')
        bottom = fc
    out = f"fc{len(hidden) + 1}"
    text.append(_fc(out, bottom, classes))
    text.append(f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "{out}" '
                f'bottom: "label" top: "loss" }}\n')
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
