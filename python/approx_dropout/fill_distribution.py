"""Fill pattern_distribution of a net's approximate-dropout layers (`apply`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .pattern_search import LAYER_RATE_TOLERANCE, SearchError, SearchResult, search
from .prototxt_io import PrototxtError

APPROX_LAYER_TYPES = ("ApproxDropoutInnerProduct", "ApproxDropoutLSTM")
DEFAULT_MAX_DP = 16


@dataclass
class FilledLayer:
    name: str
    max_dp: int          # N actually searched (capped by the layer's units)
    result: SearchResult
    note: str = ""


def units_known_from_prototxt(layer) -> int | None:
    """How many units the pattern acts on, where the prototxt alone says so.

    ROW on the output side of an inner product acts on num_output neurons;
    the input side, TILE and LSTM depend on the bottom's shape, which only
    a loaded net knows (the layer checks dp <= units at setup).
    """
    param = layer.approx_dropout_param
    row, output = param.pattern == 0, param.side == 0  # ROW, OUTPUT
    if layer.type == "ApproxDropoutInnerProduct" and row and output:
        return layer.inner_product_param.num_output or None
    return None


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


def fill_layer(layer, max_dp: int, cache: DistributionCache) -> FilledLayer:
    """Search a distribution for the layer's dropout_ratio and store it."""
    param = layer.approx_dropout_param
    p = param.dropout_ratio  # the float32 value the C++ layer will see
    units = units_known_from_prototxt(layer)
    n, note = max_dp, ""
    if units is not None and units < max_dp:
        n, note = units, f"max dp {max_dp} capped at num_output {units}"
    try:
        result = cache.get(p, n)
    except SearchError as e:
        raise PrototxtError(f"layer {layer.name}: {e}") from None
    if abs(result.rate - p) > LAYER_RATE_TOLERANCE:
        raise PrototxtError(
            f"layer {layer.name}: the {cache.method} search reached rate "
            f"{result.rate:.4f} for dropout_ratio {p:.6g} with dp <= {n}, more "
            f"than the {LAYER_RATE_TOLERANCE} the layer accepts; use --method "
            f"bounded{' or a larger --max-dp' if n == max_dp else ''}")
    del param.pattern_distribution[:]
    param.pattern_distribution.extend(float(k) for k in trim(result.distribution))
    return FilledLayer(layer.name, n, result, note)


def trim(k: Sequence[float]) -> list[float]:
    """Drop trailing zeros: the layer reads dp = len(distribution) as the max."""
    values = [float(v) for v in k]
    while values and values[-1] == 0:
        values.pop()
    return values


def fill_distributions(net, layer_names: Iterable[str] | None = None,
                       max_dp: int = DEFAULT_MAX_DP, method: str = "bounded",
                       options: dict[str, Any] | None = None) -> list[FilledLayer]:
    """Fill every approximate-dropout layer of net, or only the named ones.

    Raises PrototxtError (and leaves net untouched) for a named layer that is
    missing or of another type, a net without such layers, or a search whose
    rate the layer would refuse.
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
            raise PrototxtError(
                f"the net has no {' or '.join(APPROX_LAYER_TYPES)} layer")
    cache = DistributionCache(method, options)
    work = net.__class__()
    work.CopyFrom(net)  # fill a copy, so that an error leaves net as it was
    filled = [fill_layer(work.layer[i], max_dp, cache) for i in chosen]
    net.CopyFrom(work)
    return filled
