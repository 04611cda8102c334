"""Fill pattern_distribution of a net's approximate-dropout layers (`apply`).

A layer refuses, at setup, a distribution with mass on a period dp larger
than the number of units its pattern acts on, and tiles larger than its
weight matrix (prototxt.rules: layer_units, with the table of units). So the
searched N is capped at the layer's units.

K, the input size, is not in the layer's parameters: it is inferred from the
net (prototxt.shapes), from the layer's first bottom (an
ApproxDropoutInnerProduct may take a second one, its producer's pattern,
which does not change K). When it cannot be, and the requested N could
exceed the units, the caller must give N explicitly (--max-dp), which is
then trusted. Settings a layer refuses whatever its input (layout with TILE,
the LSTM's recurrent fields on an inner product) are reported before any
search (rules.field_problem).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from ..patterns.search import LAYER_RATE_TOLERANCE, SearchError, SearchResult, search
from . import shapes as net_shapes
from .io import PrototxtError
from .rules import Units, distribution_problem, layer_units, needs_input_size, trim

APPROX_LAYER_TYPES = ("ApproxDropoutInnerProduct", "ApproxDropoutLSTM")
DEFAULT_MAX_DP = 16


@dataclass
class FilledLayer:
    name: str
    max_dp: int          # N actually searched (capped by the layer's units)
    result: SearchResult
    note: str = ""
    # the distribution the layer had before, when it had one, and why the
    # layer would have refused it ("" if it would have taken it)
    replaced: list[float] = field(default_factory=list)
    replaced_problem: str = ""


class ShapeOracle:
    """Units of the layers of one net, from shapes inferred once per phase."""

    def __init__(self, net, base: str | os.PathLike[str] | None = None):
        self.net = net
        self.base = base
        self._shapes: dict[int, net_shapes.NetShapes] = {}

    def _phase(self, phase: int) -> net_shapes.NetShapes:
        if phase not in self._shapes:
            self._shapes[phase] = net_shapes.infer(self.net, phase, self.base)
        return self._shapes[phase]

    def units(self, index: int, layer=None) -> Units:
        """Units of net.layer[index] (or of layer, placed there), over both phases."""
        layer = layer if layer is not None else self.net.layer[index]
        if not needs_input_size(layer):
            return layer_units(layer)
        found: list[Units] = []
        for phase in (net_shapes.TRAIN, net_shapes.TEST):
            if not net_shapes.included(self.net.layer[index], phase):
                continue
            shapes = self._phase(phase)
            bottoms = shapes.bottoms.get(index) or [None]
            reasons = shapes.bottom_reasons.get(index) or ["the layer has no bottom"]
            unknown = f"the input size of {layer.name!r} is unknown: {reasons[0]}"
            found.append(layer_units(layer, bottoms[0], unknown))
        if not found:
            return layer_units(layer)
        for units in found:
            if units.problem or units.count is None:
                return units
        return min(found, key=lambda u: u.count)


class DistributionCache:
    """One search per (rate, N): layers with the same ratio share the result."""

    def __init__(self, method: str = "bounded", options: dict[str, Any] | None = None):
        self.method = method
        self.options = dict(options or {})
        self._results: dict[tuple[float, int], SearchResult] = {}

    def get(self, p: float, max_dp: int) -> SearchResult:
        key = (p, max_dp)
        if key not in self._results:
            self._results[key] = search(p, max_dp, self.method, **self.options)
        return self._results[key]


def fill_layer(layer, max_dp: Optional[int], cache: DistributionCache,
               units: Optional[Units] = None) -> FilledLayer:
    """Search a distribution for the layer's dropout_ratio and store it.

    max_dp None means DEFAULT_MAX_DP, which may not be used when the layer's
    units are unknown and could be fewer; an explicit max_dp is trusted then.
    units: from ShapeOracle; by default what the prototxt alone says.
    """
    param = layer.approx_dropout_param
    p = param.dropout_ratio  # the float32 value the C++ layer will see
    units = units or layer_units(layer)
    wanted = DEFAULT_MAX_DP if max_dp is None else max_dp
    if units.problem:
        raise PrototxtError(f"layer {layer.name}: {units.problem}; Caffe would refuse the layer")
    n, note, capped = wanted, "", False
    if units.count is not None:
        if units.count < wanted:
            n, capped = units.count, True
            note = f"max dp {wanted} capped at {units.what} {units.count}"
    elif wanted > units.at_least:
        if max_dp is None:
            raise PrototxtError(
                f"layer {layer.name}: dp must not exceed its {units.what}, and {units.unknown}; "
                f"pass --max-dp N with N no larger than the {units.what}")
        note = f"{units.unknown}; max dp {wanted} as given"
    if capped and p > (n - 1) / n:
        # the search's own message would suggest a larger max dp, which the layer refuses
        raise PrototxtError(
            f"layer {layer.name}: dropout_ratio {p:.6g} cannot be reached with dp <= {n}, "
            f"the layer's {units.what} (the largest rate is {(n - 1) / n:.6g})")
    try:
        if p == 0:
            # dp = 1 always is the only distribution of rate 0 (a layer that
            # only skips its producer's dropped inputs); the paper's search
            # would miss it by its entropy term
            result = search(0.0, n, "bounded")
            note = "; ".join(filter(None, [note, "dropout_ratio 0: dp = 1"]))
        else:
            result = cache.get(p, n)
    except SearchError as e:
        raise PrototxtError(f"layer {layer.name}: {e}") from None
    if abs(result.rate - p) > LAYER_RATE_TOLERANCE:
        raise PrototxtError(
            f"layer {layer.name}: the {cache.method} search reached rate "
            f"{result.rate:.4f} for dropout_ratio {p:.6g} with dp <= {n}, more "
            f"than the {LAYER_RATE_TOLERANCE} the layer accepts; use --method "
            f"bounded{' or a larger --max-dp' if n == wanted else ''}")
    previous = [float(k) for k in param.pattern_distribution]
    del param.pattern_distribution[:]
    param.pattern_distribution.extend(float(k) for k in trim(result.distribution))
    return FilledLayer(layer.name, n, result, note, previous,
                       distribution_problem(previous, p, units) if previous else "")


def fill_distributions(net, layer_names: Iterable[str] | None = None,
                       max_dp: Optional[int] = None, method: str = "bounded",
                       options: dict[str, Any] | None = None,
                       base: str | os.PathLike[str] | None = None) -> list[FilledLayer]:
    """Fill every approximate-dropout layer of net, or only the named ones.

    max_dp: the largest dp searched, capped per layer at its units (None:
    DEFAULT_MAX_DP, see fill_layer). base: the folder Caffe will run in
    (relative HDF5Data sources are read from there to learn input sizes).
    Raises PrototxtError (and leaves net untouched) for a named layer that is
    missing or of another type, a net without such layers, a layer Caffe
    would refuse, or a search whose rate the layer would refuse.
    """
    names = list(layer_names or [])
    if names:
        chosen = []
        for name in names:
            matches = [i for i, layer in enumerate(net.layer) if layer.name == name]
            if not matches:
                raise PrototxtError(f"no layer named {name!r} in the net")
            for i in matches:
                if net.layer[i].type not in APPROX_LAYER_TYPES:
                    raise PrototxtError(
                        f"layer {name!r} is of type {net.layer[i].type}, not "
                        f"{' or '.join(APPROX_LAYER_TYPES)}")
                if i not in chosen:
                    chosen.append(i)
    else:
        chosen = [i for i, layer in enumerate(net.layer)
                  if layer.type in APPROX_LAYER_TYPES]
        if not chosen:
            dropouts = [layer.name for layer in net.layer if layer.type == "Dropout"]
            hint = (f"; it has Dropout layers ({', '.join(dropouts)}): `approx-dropout "
                    f"convert NET -o OUT` turns them into approximate layers"
                    if dropouts else "")
            raise PrototxtError(
                f"the net has no {' or '.join(APPROX_LAYER_TYPES)} layer{hint}")
    cache = DistributionCache(method, options)
    oracle = ShapeOracle(net, base)
    work = net.__class__()
    work.CopyFrom(net)  # fill a copy, so that an error leaves net as it was
    filled = [fill_layer(work.layer[i], max_dp, cache, oracle.units(i)) for i in chosen]
    net.CopyFrom(work)
    return filled

