"""Rewrite InnerProduct [-> ReLU] -> Dropout chains into ApproxDropoutInnerProduct (`convert`).

Why the order may change: with a mask m in {0, 1} and scale s = 1/(1 - p) > 0,
ReLU(m s x) = m s ReLU(x), because ReLU(0) = 0 and ReLU is positively
homogeneous. So dropping the ReLU's output equals dropping the inner
product's output neurons, which ApproxDropoutInnerProduct (ROW, OUTPUT side)
does while computing only the kept ones. Any other layer between them
(Sigmoid, TanH, BatchNorm, ...) breaks that identity, and a blob of the
chain that another layer also reads would see dropped values afterwards; such
chains are refused with the reason.

The inner product keeps its layer name and parameter blobs, so a
.caffemodel trained with the original net still loads into the converted one.
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Optional

from .fill_distribution import DistributionCache, FilledLayer, ShapeOracle, Units, fill_layer
from .prototxt_io import PrototxtError, caffe_pb2

PATTERNS = ("ROW", "TILE")


@dataclass
class Chain:
    inner_product: int          # layer indices in the original net
    relu: int | None
    dropout: int


@dataclass
class ConvertReport:
    converted: list[str] = field(default_factory=list)       # "fc1 -> relu1 -> drop1"
    refused: list[tuple[str, str]] = field(default_factory=list)  # (dropout layer, why)
    filled: list[FilledLayer] = field(default_factory=list)


class _Dataflow:
    """Which layer produced each bottom, and who reads each produced blob.

    A blob is identified by (producing layer index, name): in-place layers
    make a new one under the same name. -1 marks a net input or a blob no
    earlier layer produces.
    """

    def __init__(self, net):
        current: dict[str, int] = {}
        self.source: list[list[int]] = []
        self.readers: dict[tuple[int, str], list[int]] = defaultdict(list)
        for i, layer in enumerate(net.layer):
            srcs = [current.get(b, -1) for b in layer.bottom]
            for src, b in zip(srcs, layer.bottom):
                self.readers[(src, b)].append(i)
            self.source.append(srcs)
            for t in layer.top:
                current[t] = i


def _names(net, indices: list[int]) -> str:
    return ", ".join(net.layer[i].name for i in indices)


def _find_chain(net, flow: _Dataflow, d: int) -> Chain | str:
    """The chain ending in Dropout layer d, or why it cannot be converted."""
    drop = net.layer[d]
    if len(drop.bottom) != 1 or len(drop.top) != 1:
        return "a Dropout layer needs exactly one bottom and one top"
    src = flow.source[d][0]
    if src < 0:
        return f"its input {drop.bottom[0]!r} is not produced by a layer"
    prev = net.layer[src]
    relu = None
    if prev.type == "ReLU":
        relu = src
        ip = flow.source[src][0] if len(prev.bottom) == 1 else -1
        if ip < 0 or net.layer[ip].type != "InnerProduct":
            what = (f"{net.layer[ip].type} layer {net.layer[ip].name!r}"
                    if ip >= 0 else "no layer")
            return f"left alone: ReLU {prev.name!r} reads {what}, not an InnerProduct"
    elif prev.type == "InnerProduct":
        ip = src
    else:
        before = flow.source[src][0] if len(prev.bottom) == 1 else -1
        if before >= 0 and net.layer[before].type == "InnerProduct":
            return (f"{prev.type} layer {prev.name!r} sits between InnerProduct "
                    f"{net.layer[before].name!r} and the dropout; only ReLU commutes "
                    f"with dropping (ReLU(0) = 0 and ReLU(s x) = s ReLU(x) for s > 0)")
        return f"left alone: its input comes from {prev.type} layer {prev.name!r}"
    chain = Chain(ip, relu, d)
    members = [i for i in (ip, relu, d) if i is not None]
    for i in members:
        layer = net.layer[i]
        if len(layer.include) or len(layer.exclude):
            return (f"layer {layer.name!r} has include/exclude phase rules; only "
                    f"chains present in every phase are converted")
    ip_layer = net.layer[ip]
    if len(ip_layer.top) != 1:
        return f"InnerProduct {ip_layer.name!r} has {len(ip_layer.top)} tops"
    if ip_layer.inner_product_param.transpose:
        return (f"InnerProduct {ip_layer.name!r} has transpose: true, which "
                f"ApproxDropoutInnerProduct does not support")
    # Forks of Caffe (NVIDIA's) add scale_train; BVLC's Dropout always scales.
    has_scale_train = "scale_train" in drop.dropout_param.DESCRIPTOR.fields_by_name
    if has_scale_train and not drop.dropout_param.scale_train:
        return ("dropout_param.scale_train is false (scaling at test time); "
                "ApproxDropoutInnerProduct scales the kept units while training")
    # Every blob between the inner product and the dropout must be read by
    # the next layer of the chain only.
    for producer, reader in ((ip, relu if relu is not None else d), (relu, d)):
        if producer is None:
            continue
        blob = net.layer[producer].top[0]
        readers = flow.readers[(producer, blob)]
        others = [i for i in readers if i != reader]
        if others:
            return (f"blob {blob!r} (output of {net.layer[producer].name!r}) is also "
                    f"read by {_names(net, others)}, which would then see dropped values")
    return chain


def _renames_are_safe(net, chain: Chain) -> str:
    """The layer taking over the dropout's top must not shadow a live blob."""
    last = chain.relu if chain.relu is not None else chain.inner_product
    new_top = net.layer[chain.dropout].top[0]
    if net.layer[last].top[0] == new_top:
        return ""
    for i in range(last + 1, chain.dropout):
        layer = net.layer[i]
        if new_top in layer.bottom or new_top in layer.top:
            return (f"layer {layer.name!r} between the chain's layers uses blob "
                    f"{new_top!r}, the dropout's output name")
    return ""


def _as_approx(layer, ratio: float, pattern_value: int):
    """The ApproxDropoutInnerProduct that convert makes of an InnerProduct layer."""
    approx = layer.__class__()
    approx.CopyFrom(layer)
    approx.type = "ApproxDropoutInnerProduct"
    approx.approx_dropout_param.dropout_ratio = ratio
    approx.approx_dropout_param.pattern = pattern_value
    return approx


def _fits(units: Units, pattern: str, name: str) -> str:
    """Why the converted layer would not load in Caffe, or ""."""
    if units.problem:
        return f"{pattern} does not fit {name!r}: {units.problem}"
    if pattern == "TILE" and units.count is None:
        # tile_width <= K is checked by the layer; unverifiable without K
        return (f"TILE needs tile_width <= the input size K, and {units.unknown}; "
                f"give the net's input a shape (Input or DummyData) or use ROW")
    return ""


def convert_net(net, max_dp: Optional[int] = None, method: str = "bounded",
                pattern: str = "ROW", options: dict[str, Any] | None = None,
                base: str | os.PathLike[str] | None = None):
    """Return (converted NetParameter, ConvertReport); net is not modified.

    max_dp, base: as for fill_distribution.fill_distributions. A chain whose
    converted layer Caffe would refuse (tiles larger than the weight matrix,
    or TILE where the input size is unknown) is refused with the reason.
    Raises PrototxtError when a chain's dropout ratio gets no distribution
    the layer would accept (see fill_distribution.fill_layer).
    """
    if pattern not in PATTERNS:
        raise PrototxtError(f"pattern must be one of {', '.join(PATTERNS)}, got {pattern!r}")
    pattern_value = caffe_pb2().ApproxDropoutParameter.Pattern.Value(pattern)
    flow = _Dataflow(net)
    shapes = ShapeOracle(net, base)
    report = ConvertReport()
    chains: list[tuple[Chain, Units]] = []
    for d, layer in enumerate(net.layer):
        if layer.type != "Dropout":
            continue
        found = _find_chain(net, flow, d)
        units = None
        if isinstance(found, Chain):
            ip = net.layer[found.inner_product]
            approx = _as_approx(ip, layer.dropout_param.dropout_ratio, pattern_value)
            units = shapes.units(found.inner_product, approx)
            found = (_renames_are_safe(net, found) or _fits(units, pattern, ip.name)
                     or found)
        if isinstance(found, str):
            report.refused.append((layer.name, found))
        else:
            chains.append((found, units))
    out = net.__class__()
    out.CopyFrom(net)
    cache = DistributionCache(method, options)
    for chain, units in chains:
        drop = net.layer[chain.dropout]
        ip = out.layer[chain.inner_product]
        ip.CopyFrom(_as_approx(ip, drop.dropout_param.dropout_ratio, pattern_value))
        last = out.layer[chain.relu] if chain.relu is not None else ip
        last.top[0] = drop.top[0]
        report.filled.append(fill_layer(ip, max_dp, cache, units))
        report.converted.append(" -> ".join(
            net.layer[i].name for i in (chain.inner_product, chain.relu, chain.dropout)
            if i is not None))
    dropped = {chain.dropout for chain, _ in chains}
    result = net.__class__()
    result.CopyFrom(out)
    del result.layer[:]
    result.layer.extend(layer for i, layer in enumerate(out.layer) if i not in dropped)
    return result, report
