"""Rewrite InnerProduct [-> ReLU] -> Dropout chains into ApproxDropoutInnerProduct (`convert`).

Why the order may change: with a mask m in {0, 1} and scale s = 1/(1 - p) > 0,
ReLU(m s x) = m s ReLU(x), because ReLU(0) = 0 and ReLU is positively
homogeneous. So dropping the ReLU's output equals dropping the inner
product's output neurons, which ApproxDropoutInnerProduct (ROW, OUTPUT side)
does while computing only the kept ones. Any other layer between them
(Sigmoid, TanH, BatchNorm, ...) breaks that identity, and a blob of the
chain that another layer also reads would see dropped values afterwards; such
chains are refused with the reason.

A Dropout that no such chain ends in but whose output only an InnerProduct
reads (Pooling -> Dropout -> InnerProduct, as GoogLeNet's head) drops that
layer's input: the InnerProduct becomes an ApproxDropoutInnerProduct with
`side: INPUT` (ROW), which computes only the kept input features (with
--pattern TILE it becomes a TILE layer like every converted one: tiles of W
dropped, no side). A layer
drops one side only, so an InnerProduct that already ends a chain is left
with its Dropout before it, with the reason.

The inner product keeps its layer name and parameter blobs, so a
.caffemodel trained with the original net still loads into the converted one.

Pattern propagation (propagate="converted", the default): when a converted
layer's output reaches the next converted layer directly or through one
ReLU, the first gets a second top, its pattern ("<name>_pattern"), and the
second takes it as a second bottom. The second layer then skips the input
columns the first dropped: they are zero for the whole batch slice (a ReLU
keeps them zero), so its results are the same, only computed faster. With
propagate="all" a plain InnerProduct reading a converted layer's output
that way becomes an ApproxDropoutInnerProduct with dropout_ratio 0 that only
skips (same name and parameters, so a .caffemodel still loads). Only ROW
patterns are wired: TILE drops weight tiles, never a whole unit, so no
input column of the next layer is zero for it to skip. A pair is left
unwired, with the reason, when anything but one ReLU sits between (another
activation would turn the zeros into something else), when include/exclude
rules could change what the consumer reads, when the consumer's axis
differs, or when a
later layer rewrites the consumer's input in place (the consumer's weight
gradient would then read values that are not zero). Different `phase:`
overrides are fine (a converted layer takes its Dropout's, e.g. TRAIN to drop
at test time): a consumer skips, slice by slice, what its producer dropped in
whatever phase each runs. A wired producer with
per-top loss_weight, or consumer with per-bottom propagate_down, gets an entry
for the pattern blob (0, false), as Caffe requires one per blob.
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Optional

from . import shapes as net_shapes
from .fill import DistributionCache, FilledLayer, ShapeOracle, fill_layer
from .io import PrototxtError, caffe_pb2
from .rules import INPUT, ROW, Units

PATTERNS = ("ROW", "TILE")
PROPAGATE_MODES = ("off", "converted", "all")
# How far upstream of a consumer a converted layer is looked for, to say
# why a pair with layers between them is not wired.
_MAX_LAYERS_BETWEEN = 3


@dataclass
class Chain:
    inner_product: int          # layer indices in the original net
    relu: int | None
    dropout: int


@dataclass
class InputChain:
    dropout: int                # layer indices in the original net
    inner_product: int          # reads the dropout's output, becomes side: INPUT


@dataclass
class Wiring:
    producer: str               # layer names
    consumer: str
    pattern: str                # the pattern blob: producer's second top, consumer's second bottom
    relu: str | None = None     # the ReLU between them, if any
    skip_only: bool = False     # consumer was a plain InnerProduct, now dropout_ratio 0

    def describe(self) -> str:
        text = f"wired {self.producer} -> {self.consumer} (pattern {self.pattern})"
        if self.skip_only:
            text += (f"; {self.consumer} is now an ApproxDropoutInnerProduct with "
                     f"dropout_ratio 0 that only skips")
        return text


@dataclass
class ConvertReport:
    converted: list[str] = field(default_factory=list)       # "fc1 -> relu1 -> drop1"
    refused: list[tuple[str, str]] = field(default_factory=list)  # (dropout layer, why)
    filled: list[FilledLayer] = field(default_factory=list)
    wired: list[Wiring] = field(default_factory=list)
    not_wired: list[tuple[str, str, str]] = field(default_factory=list)  # (producer, consumer, why)
    # (producer, plain InnerProduct) pairs that propagate="all" would wire
    could_skip: list[tuple[str, str]] = field(default_factory=list)


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
    why = _common_refusal(net, [i for i in (ip, relu, d) if i is not None], drop)
    if why:
        return why
    ip_layer = net.layer[ip]
    if len(ip_layer.top) != 1:
        return f"InnerProduct {ip_layer.name!r} has {len(ip_layer.top)} tops"
    if ip_layer.inner_product_param.transpose:
        return (f"InnerProduct {ip_layer.name!r} has transpose: true, which "
                f"ApproxDropoutInnerProduct does not support")
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


def _common_refusal(net, indices: list[int], drop) -> str:
    """Refusals shared by both kinds of chain: phase rules, scale_train."""
    for i in indices:
        layer = net.layer[i]
        if len(layer.include) or len(layer.exclude):
            return (f"layer {layer.name!r} has include/exclude phase rules; only "
                    f"chains present in every phase are converted")
    # Forks of Caffe (NVIDIA's) add scale_train; BVLC's Dropout always scales.
    has_scale_train = "scale_train" in drop.dropout_param.DESCRIPTOR.fields_by_name
    if has_scale_train and not drop.dropout_param.scale_train:
        return ("dropout_param.scale_train is false (scaling at test time); "
                "ApproxDropoutInnerProduct scales the kept units while training")
    return ""


def _one_in_one_out(layer) -> str:
    """Why an InnerProduct cannot take a second bottom (a dropped input or a
    pattern): more than one bottom or top, or transpose; else ""."""
    if len(layer.bottom) != 1:
        return f"InnerProduct {layer.name!r} has {len(layer.bottom)} bottoms already"
    if len(layer.top) != 1:
        return f"InnerProduct {layer.name!r} has {len(layer.top)} tops"
    if layer.inner_product_param.transpose:
        return (f"InnerProduct {layer.name!r} has transpose: true, which "
                f"ApproxDropoutInnerProduct does not support")
    return ""


def _find_input_chain(net, flow: _Dataflow, d: int,
                      output_ips: set[int]) -> InputChain | str | None:
    """Dropout d in front of an InnerProduct (side: INPUT), why not, or None
    when no InnerProduct reads its output."""
    drop = net.layer[d]
    if len(drop.bottom) != 1 or len(drop.top) != 1:
        return None
    readers = flow.readers[(d, drop.top[0])]
    ips = [i for i in readers if net.layer[i].type == "InnerProduct"]
    if not ips:
        return None
    if len(readers) > 1:
        return (f"its output {drop.top[0]!r} is read by {_names(net, readers)}; dropping "
                f"the input of {net.layer[ips[0]].name!r} alone would change what the "
                f"others read")
    c = ips[0]
    ip = net.layer[c]
    why = _one_in_one_out(ip)
    if why:
        return why
    if c in output_ips:
        return (f"InnerProduct {ip.name!r} reads it but already drops its own outputs "
                f"(a converted chain); a layer drops one side only")
    why = _common_refusal(net, [d, c], drop)
    if why:
        return why
    # Without the dropout, the InnerProduct reads the dropout's input: no
    # layer between them may rewrite that blob.
    source_blob = drop.bottom[0]
    for i in range(d + 1, c):
        if source_blob in net.layer[i].top:
            return (f"layer {net.layer[i].name!r} rewrites {source_blob!r} between "
                    f"{drop.name!r} and {ip.name!r}")
    return InputChain(d, c)


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


def _as_approx(layer, ratio: float, pattern_value: int, input_side: bool = False):
    """The ApproxDropoutInnerProduct that convert makes of an InnerProduct layer."""
    approx = layer.__class__()
    approx.CopyFrom(layer)
    approx.type = "ApproxDropoutInnerProduct"
    approx.approx_dropout_param.dropout_ratio = ratio
    approx.approx_dropout_param.pattern = pattern_value
    if input_side and pattern_value == ROW:
        approx.approx_dropout_param.side = INPUT
    return approx


def _take_phase(approx, drop) -> None:
    """LayerParameter.phase runs one layer in another phase than its net (a
    Dropout with phase: TRAIN drops at test time too: MC dropout). The
    converted layer drops, so it takes the dropout's; an InnerProduct's own
    override changed nothing and goes."""
    if drop.HasField("phase"):
        approx.phase = drop.phase
    else:
        approx.ClearField("phase")


def _fits(units: Units, pattern: str, name: str) -> str:
    """Why the converted layer would not load in Caffe, or ""."""
    if units.problem:
        return f"{pattern} does not fit {name!r}: {units.problem}"
    if pattern == "TILE" and units.count is None:
        # tile_width <= K is checked by the layer; unverifiable without K
        return (f"TILE needs tile_width <= the input size K, and {units.unknown}; "
                f"give the net's input a shape (Input or DummyData) or use ROW")
    return ""


def _unique_blob_name(net, wanted: str, taken: set[str]) -> str:
    """wanted, or wanted1, wanted2, ...: a name no blob of net (nor taken) has."""
    names = set(taken) | set(net.input)
    for layer in net.layer:
        names.update(layer.top)
        names.update(layer.bottom)
    name, n = wanted, 0
    while name in names:
        n += 1
        name = f"{wanted}{n}"
    return name


def _wiring_problem(net, flow: _Dataflow, producer: int, relu: int | None,
                    consumer: int) -> str:
    """Why the consumer may not take the producer's pattern, or ""."""
    c_layer, p_layer = net.layer[consumer], net.layer[producer]
    if p_layer.approx_dropout_param.side == INPUT:
        return f"{p_layer.name!r} drops its inputs (side: INPUT), not its outputs"
    if p_layer.approx_dropout_param.dropout_ratio <= 0:
        return f"{p_layer.name!r} has dropout_ratio 0: it drops no output for the next to skip"
    if c_layer.type == "ApproxDropoutInnerProduct" and \
            c_layer.approx_dropout_param.side == INPUT:
        return (f"{c_layer.name!r} drops its own inputs (side: INPUT), so it cannot also "
                f"take a pattern bottom")
    for i in (relu, consumer):
        if i is not None and (len(net.layer[i].include) or len(net.layer[i].exclude)):
            return (f"layer {net.layer[i].name!r} has include/exclude phase rules, so what "
                    f"{c_layer.name!r} reads could differ between phases")
    why = _one_in_one_out(c_layer)
    if why:
        return why
    # The consumer's input has the producer's output shape, so its K is the
    # producer's num_output exactly when both count from the same axis.
    p_axis = p_layer.inner_product_param.axis
    c_axis = c_layer.inner_product_param.axis
    rank = p_axis + 1 if p_axis >= 0 else None
    if p_axis != c_axis and (rank is None or net_shapes.canonical_axis(c_axis, rank) != p_axis):
        return (f"{c_layer.name!r} has axis {c_axis} and {p_layer.name!r} axis {p_axis}, "
                f"so its input size is not the {p_layer.name!r}'s num_output")
    blob = c_layer.bottom[0]
    source = flow.source[consumer][0]
    rewriters = [i for i in flow.readers[(source, blob)]
                 if i != consumer and blob in net.layer[i].top]
    if rewriters:
        return (f"{_names(net, rewriters)} rewrites blob {blob!r} in place after "
                f"{c_layer.name!r} reads it, so its weight gradient would not see zeros")
    return ""


def _upstream(net, flow: _Dataflow, consumer: int,
              producers: set[int]) -> tuple[int, list[int]] | None:
    """(producer, layers between) when a converted layer feeds the consumer
    through a short chain of one-bottom layers, else None."""
    between: list[int] = []
    src = flow.source[consumer][0] if net.layer[consumer].bottom else -1
    while src >= 0 and len(between) <= _MAX_LAYERS_BETWEEN:
        if src in producers:
            return src, between
        layer = net.layer[src]
        if len(layer.bottom) != 1 or layer.type in ("InnerProduct", "ApproxDropoutInnerProduct"):
            return None
        between.insert(0, src)
        src = flow.source[src][0]
    return None


def _wire_patterns(net, converted: set[int], mode: str, report: ConvertReport) -> None:
    """Give consumers of converted ROW layers their producer's pattern (in place).

    Producers are the converted layers; consumers the converted layers and,
    in mode "all", plain InnerProducts (which then only skip).
    """
    flow = _Dataflow(net)
    pattern_of: dict[int, str] = {}
    taken: set[str] = set()
    for c, layer in enumerate(net.layer):
        plain = layer.type == "InnerProduct"
        if c not in converted and not plain:
            continue
        found = _upstream(net, flow, c, converted)
        if found is None:
            continue
        p, between = found
        relu = between[0] if len(between) == 1 and net.layer[between[0]].type == "ReLU" \
            else None
        names = (net.layer[p].name, layer.name)
        if between and relu is None:
            if plain and mode != "all":
                continue
            kinds = ", ".join(f"{net.layer[i].type} layer {net.layer[i].name!r}"
                              for i in between)
            report.not_wired.append((*names, (
                f"{kinds} sit{'s' if len(between) == 1 else ''} between them; only one ReLU "
                f"may (it keeps the dropped columns zero: ReLU(0) = 0)")))
            continue
        if plain and mode != "all":
            report.could_skip.append(names)
            continue
        why = _wiring_problem(net, flow, p, relu, c)
        if why:
            report.not_wired.append((*names, why))
            continue
        if p not in pattern_of:
            pattern_of[p] = _unique_blob_name(net, f"{net.layer[p].name}_pattern", taken)
            taken.add(pattern_of[p])
            net.layer[p].top.append(pattern_of[p])
            if len(net.layer[p].loss_weight):  # one per top, or none
                net.layer[p].loss_weight.append(0)
        if plain:
            layer.type = "ApproxDropoutInnerProduct"
            layer.approx_dropout_param.dropout_ratio = 0
            layer.approx_dropout_param.pattern = ROW
        layer.bottom.append(pattern_of[p])
        if len(layer.propagate_down):  # one per bottom, or none
            layer.propagate_down.append(False)
        report.wired.append(Wiring(*names, pattern_of[p],
                                   net.layer[relu].name if relu is not None else None, plain))


def convert_net(net, max_dp: Optional[int] = None, method: str = "bounded",
                pattern: str = "ROW", options: dict[str, Any] | None = None,
                base: str | os.PathLike[str] | None = None, propagate: str = "converted"):
    """Return (converted NetParameter, ConvertReport); net is not modified.

    max_dp, base: as for fill.fill_distributions. A chain whose
    converted layer Caffe would refuse (tiles larger than the weight matrix,
    or TILE where the input size is unknown) is refused with the reason.
    propagate: "off", "converted" (wire the patterns of converted ROW layers
    that feed each other through at most a ReLU) or "all" (also make plain
    InnerProducts fed that way skip; see the module's docstring).
    Raises PrototxtError when a chain's dropout ratio gets no distribution
    the layer would accept (see fill.fill_layer).
    """
    if pattern not in PATTERNS:
        raise PrototxtError(f"pattern must be one of {', '.join(PATTERNS)}, got {pattern!r}")
    if propagate not in PROPAGATE_MODES:
        raise PrototxtError(f"propagate must be one of {', '.join(PROPAGATE_MODES)}, "
                            f"got {propagate!r}")
    pattern_value = caffe_pb2().ApproxDropoutParameter.Pattern.Value(pattern)
    flow = _Dataflow(net)
    shapes = ShapeOracle(net, base)
    report = ConvertReport()
    chains: list[tuple[Chain, Units]] = []
    refused: dict[int, str] = {}
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
            refused[d] = found
        else:
            chains.append((found, units))
    # Dropouts in front of an InnerProduct: its input side.
    output_ips = {chain.inner_product for chain, _ in chains}
    input_chains: list[tuple[InputChain, Units]] = []
    for d in sorted(refused):
        layer = net.layer[d]
        found_input = _find_input_chain(net, flow, d, output_ips)
        if isinstance(found_input, InputChain):
            ip = net.layer[found_input.inner_product]
            approx = _as_approx(ip, layer.dropout_param.dropout_ratio, pattern_value, True)
            units = shapes.units(found_input.inner_product, approx)
            why = _fits(units, pattern, ip.name)
            if not why:
                input_chains.append((found_input, units))
                continue
            found_input = why
        why = refused[d]
        if isinstance(found_input, str):
            why += f"; as the input of the InnerProduct reading it: {found_input}"
        report.refused.append((layer.name, why))
    out = net.__class__()
    out.CopyFrom(net)
    cache = DistributionCache(method, options)
    for chain, units in chains:
        drop = net.layer[chain.dropout]
        ip = out.layer[chain.inner_product]
        ip.CopyFrom(_as_approx(ip, drop.dropout_param.dropout_ratio, pattern_value))
        _take_phase(ip, drop)
        last = out.layer[chain.relu] if chain.relu is not None else ip
        last.top[0] = drop.top[0]
        report.filled.append(fill_layer(ip, max_dp, cache, units))
        report.converted.append(" -> ".join(
            net.layer[i].name for i in (chain.inner_product, chain.relu, chain.dropout)
            if i is not None))
    for input_chain, units in input_chains:
        drop = net.layer[input_chain.dropout]
        ip = out.layer[input_chain.inner_product]
        ip.CopyFrom(_as_approx(ip, drop.dropout_param.dropout_ratio, pattern_value, True))
        _take_phase(ip, drop)
        ip.bottom[0] = drop.bottom[0]
        report.filled.append(fill_layer(ip, max_dp, cache, units))
        side = " (side: INPUT)" if pattern == "ROW" else ""
        report.converted.append(f"{drop.name} -> {ip.name}{side}")
    dropped = {chain.dropout for chain, _ in chains} | {c.dropout for c, _ in input_chains}
    result = net.__class__()
    result.CopyFrom(out)
    del result.layer[:]
    result.layer.extend(layer for i, layer in enumerate(out.layer) if i not in dropped)
    if propagate != "off" and pattern == "ROW":
        new_index = {old: new for new, old in enumerate(
            i for i in range(len(out.layer)) if i not in dropped)}
        converted = {new_index[chain.inner_product] for chain, _ in chains} | \
            {new_index[c.inner_product] for c, _ in input_chains}
        _wire_patterns(result, converted, propagate, report)
    return result, report
