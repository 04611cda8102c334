"""Fuzz the approximate-dropout layers' setup checks through pycaffe.

Random approx_dropout_param settings, valid and invalid, on small
ApproxDropoutInnerProduct and ApproxDropoutLSTM nets, and pairs of
ApproxDropoutInnerProduct layers wired by a pattern (the second taking the
first's pattern top as its second bottom). Whether a setting is valid is
decided by an independent Python model of the layers' rules (Oracle and
PairOracle below, transcribed from ApproxDropoutInnerProductLayer::LayerSetUp
and SetUpPatternBottom, ApproxDropoutLSTMLayer::LayerSetUp and
FillUnrolledNet and the DropoutPatternSampler constructor), and each net runs
in a forked child (approx_dropout.harness.check):

- valid by the model: the net loads, and forward + backward in TRAIN phase
  leave every blob, parameter and gradient finite;
- invalid by the model: the child dies with a message that names the layer
  and the field ("Layer fc3: approx_dropout_param.tile_width ...", for a
  pair both layers: "Layer fc3 (pattern bottom 'h_pattern' from layer
  fc3_src): ..."), never a segfault, a hang or a silent success.

Seeded (APPROX_DROPOUT_FUZZ_SEED, default below; APPROX_DROPOUT_FUZZ_CASES
sets the count), so a failure reproduces; each failing case is printed as
its prototxt. Values within a small margin of a tolerance boundary (rate
within 0.01 of dropout_ratio, sum within 1e-4 of 1, dropout_ratio at the
largest reachable rate) are not generated: float32 rounding could flip them.
"""
from __future__ import annotations

import math
import os
import random
import signal
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

import numpy as np
import pytest
from google.protobuf import text_format

from approx_dropout.harness import check as caffe_check
from approx_dropout.prototxt import rules

SEED = int(os.environ.get("APPROX_DROPOUT_FUZZ_SEED", "20251129"))
CASES = int(os.environ.get("APPROX_DROPOUT_FUZZ_CASES", "600"))
LSTM_SHARE = 0.2
PAIR_SHARE = 0.1

# The layers' tolerances (approx_dropout_pattern.cpp), and the margins kept
# away from them so that float32 rounding cannot decide a case.
RATE_TOLERANCE, RATE_MARGIN = 0.01, 1e-3
SUM_TOLERANCE, SUM_MARGIN = 1e-4, 2e-5
REACH_MARGIN = 1e-6


# ---- the generator -----------------------------------------------------------

@dataclass
class Case:
    kind: str                       # "ip" or "lstm"
    name: str                       # the layer's name
    num_output: int
    input_shape: tuple[int, ...]    # ip: M x (K...); lstm: T x N x (K...)
    param: dict[str, Any] = field(default_factory=dict)  # approx_dropout_param fields set

    @property
    def rows(self) -> int:
        """Rows of the weight matrix the pattern addresses (LSTM: W_xc, 4 H)."""
        return 4 * self.num_output if self.kind == "lstm" else self.num_output

    @property
    def k(self) -> int:
        """Input size K: the count of x from the inner product's axis (1; LSTM: 2)."""
        return math.prod(self.input_shape[2 if self.kind == "lstm" else 1:])


def _ratio(rng: random.Random, case: Case) -> Optional[float]:
    roll = rng.random()
    if roll < 0.08:
        return None                                   # default 0.5
    if roll < 0.16:
        return rng.choice([-0.25, -1e-3, 1.0, 1.0 + 1e-3, 1.5, math.inf, math.nan])
    if roll < 0.3:
        return rng.choice([0.0, 0.3, 0.5, 0.7, 0.9])
    return round(rng.uniform(0.0, 0.97), 4)


def _tile(rng: random.Random, limit: int) -> Optional[int]:
    roll = rng.random()
    if roll < 0.15:
        return None                                   # default 32
    if roll < 0.2:
        return 0
    if roll < 0.35:
        return limit + rng.randint(1, 8)              # larger than the matrix
    return rng.randint(1, max(1, limit))


def _pattern(rng: random.Random, case: Case) -> Optional[str]:
    return rng.choice([None, "ROW", "ROW", "TILE", "TILE"])


def _side(rng: random.Random, case: Case) -> Optional[str]:
    return rng.choice([None, None, None, "OUTPUT", "INPUT", "INPUT"])


# One line per approx_dropout_param field (pattern_distribution is drawn last,
# from the others); a new field goes here and its rules into Oracle.
FIELDS: dict[str, Callable[[random.Random, Case], Any]] = {
    "dropout_ratio": _ratio,
    "pattern": _pattern,
    "side": _side,
    "tile_height": lambda rng, case: _tile(rng, case.rows),
    "tile_width": lambda rng, case: _tile(rng, case.k),
    # more slices than rows (empty slices) included; 0 is refused
    "batch_slices": lambda rng, case: rng.choice([None, None, 1, 2, 3, 4, 9] * 3 + [0]),
    # with ROW mostly unset, as a user writes it (set, it is refused)
    "tile_order": lambda rng, case: rng.choice(
        [None, "ROW_MAJOR", "DIAGONAL", "BLOCKS"] if case.param.get("pattern") == "TILE"
        else [None] * 15 + ["ROW_MAJOR"]),
    # ROW only, either side; with TILE mostly unset (set, it is refused)
    "layout": lambda rng, case: rng.choice(
        [None] * 12 + ["BLOCK"] if case.param.get("pattern") == "TILE"
        else [None, None, "STRIDED", "BLOCK"]),
    # ApproxDropoutLSTM only (the inner product refuses each of them)
    "recurrent_dropout_ratio": lambda rng, case: (
        rng.choice([None] * 3 + [0.0, 0.2, 0.5, 0.7, round(rng.uniform(0, 0.95), 4),
                                 -0.1, 1.0, math.nan])
        if case.kind == "lstm" else rng.choice([None] * 30 + [0.3])),
    "recurrent_pattern": lambda rng, case: rng.choice(
        [None, None, "PER_STEP", "PER_SEQUENCE"] if case.kind == "lstm"
        else [None] * 40 + ["PER_SEQUENCE"]),
}


def _two_point(p: float, n: int) -> Optional[list[float]]:
    """k_1..k_j with rate exactly p on the two periods bracketing p, dp <= n."""
    r = [(i - 1) / i for i in range(1, n + 1)]
    below = [i for i in range(1, n + 1) if r[i - 1] <= p]
    above = [i for i in range(1, n + 1) if r[i - 1] >= p]
    if not below or not above:
        return None
    i, j = max(below), min(above)
    k = [0.0] * j
    if i == j:
        k[i - 1] = 1.0
    else:
        w = (r[j - 1] - p) / (r[j - 1] - r[i - 1])
        k[i - 1], k[j - 1] = w, 1.0 - w
    return k


def _distribution(rng: random.Random, case: Case, units: int,
                  ratio_field: str = "dropout_ratio",
                  default_ratio: float = 0.5) -> Optional[list[float]]:
    p = case.param.get(ratio_field, default_ratio)
    if not (math.isfinite(p) and 0 <= p < 1):
        p = rng.uniform(0, 0.9)
    roll = rng.random()
    n = max(1, units + (rng.randint(1, 4) if rng.random() < 0.15 else -rng.randint(0, 2)))
    if roll < 0.3:
        return None                                   # the layer's default
    base = _two_point(p, n) or _two_point(min(p, (n - 1) / n), n) or [1.0]
    if roll < 0.55:
        return base
    if roll < 0.65:                                   # off the rate
        shift = rng.choice([-1, 1]) * rng.uniform(0.003, 0.2)
        return _two_point(min(max(p + shift, 0.0), (n - 1) / n), n) or base
    if roll < 0.75:                                   # not normalised, or just within 1e-4
        scale = 1 + rng.choice([-1, 1]) * rng.choice([rng.uniform(2e-4, 0.2),
                                                      rng.uniform(0, 5e-5)])
        return [x * scale for x in base]
    if roll < 0.82:                                   # a negative entry
        k = base + [0.0] * max(0, 2 - len(base))
        i = rng.randrange(len(k))
        k[i] -= rng.uniform(0.05, 0.5)
        k[(i + 1) % len(k)] += 1 - sum(k)
        return k
    if roll < 0.9:                                    # trailing zeros (trimmed by the layer)
        return base + [0.0] * rng.randint(1, 4)
    if roll < 0.93:
        return [0.0] * rng.randint(1, 3)
    weights = [rng.random() ** 3 for _ in range(rng.randint(1, n))]
    return [w / sum(weights) for w in weights]        # any rate


def make_case(rng: random.Random, index: int) -> Case:
    if rng.random() < LSTM_SHARE:
        t, n = rng.randint(1, 3), rng.choice([1, 1, 2, 3])
        k_dims = rng.choice([(rng.randint(1, 24),), (rng.randint(1, 3), rng.randint(1, 6))])
        case = Case("lstm", f"lstm{index}", rng.randint(1, 9), (t, n) + k_dims)
    else:
        m = rng.choice([1, 1, 2, 3, 5, 8])
        k_dims = rng.choice([(rng.randint(1, 70),), (rng.randint(1, 4), rng.randint(1, 5),
                                                     rng.randint(1, 5))])
        num_output = 0 if rng.random() < 0.03 else rng.randint(1, 70)
        case = Case("ip", f"fc{index}", num_output, (m,) + k_dims)
    for name, draw in FIELDS.items():
        value = draw(rng, case)
        if value is not None:
            case.param[name] = value
    if case.kind == "lstm" and "side" in case.param and rng.random() < 0.6:
        del case.param["side"]                        # mostly as the LSTM wants it
    units = Oracle(case).units() or 1
    dist = _distribution(rng, case, units)
    if dist is not None:
        case.param["pattern_distribution"] = dist
    # the recurrent path acts on the LSTM's hidden units; elsewhere it is refused
    if case.kind == "lstm" and rng.random() < 0.5:
        dist = _distribution(rng, case, case.num_output, "recurrent_dropout_ratio", 0.0)
    else:
        dist = [1.0] if case.kind == "ip" and rng.random() < 0.03 else None
    if dist is not None:
        case.param["recurrent_pattern_distribution"] = dist
    return case


# ---- the model of the layers' checks -------------------------------------------

class Refused(Exception):
    def __init__(self, layer: str, field_name: str, text: str = ""):
        super().__init__(f"{layer}: {field_name}")
        self.layer, self.field = layer, field_name
        self._text = text

    @property
    def text(self) -> str:
        """What the child's error must contain."""
        return self._text or f"Layer {self.layer}: {self.field}"


class TooClose(Exception):
    """Within the margin of a tolerance: float32 rounding could decide; not used."""


def f32(x: float) -> float:
    return float(np.float32(x))


class Oracle:
    """Which check, if any, refuses the case: Refused(layer, field), else None."""

    def __init__(self, case: Case):
        self.case = case
        self.param = case.param
        self.inner = f"{case.name}_x_transform" if case.kind == "lstm" else case.name

    def tile(self) -> bool:
        return self.param.get("pattern") == "TILE"

    def units(self) -> int:
        c = self.case
        if self.tile():
            th, tw = self.param.get("tile_height", 32), self.param.get("tile_width", 32)
            if th < 1 or tw < 1:
                return 0
            return -(-c.rows // th) * -(-c.k // tw)
        side_input = c.kind == "lstm" or self.param.get("side") == "INPUT"
        return c.k if side_input else c.rows

    def verdict(self) -> Optional[Refused]:
        try:
            self._check()
        except Refused as refused:
            return refused
        return None

    def _check(self) -> None:
        c, param = self.case, self.param
        ad = "approx_dropout_param."
        if c.kind == "lstm":
            # ApproxDropoutLSTMLayer::LayerSetUp: the recurrent path's sampler
            # (over the hidden units), under the LSTM's own name
            sampler(c.name, ad + "recurrent_", param.get("recurrent_dropout_ratio", 0.0),
                    param.get("recurrent_pattern_distribution", []), c.num_output)
            # ApproxDropoutLSTM::FillUnrolledNet, under the LSTM's own name
            if "side" in param and not (not self.tile() and param["side"] == "INPUT"):
                raise Refused(c.name, ad + "side")
            if self.tile() and "layout" in param:
                raise Refused(c.name, ad + "layout")
        # ApproxDropoutInnerProductLayer::LayerSetUp (LSTM: the unrolled x_transform)
        if c.rows < 1:
            raise Refused(self.inner, "inner_product_param.num_output")
        if c.kind == "ip" and any(name in param for name in RECURRENT_FIELDS):
            # one message names the three fields
            raise Refused(self.inner, ad + "recurrent_dropout_ratio")
        if param.get("batch_slices", 4) < 1:
            raise Refused(self.inner, ad + "batch_slices")
        if not self.tile() and "tile_order" in param:
            raise Refused(self.inner, ad + "tile_order")
        if self.tile():
            th, tw = param.get("tile_height", 32), param.get("tile_width", 32)
            if param.get("side") == "INPUT":
                raise Refused(self.inner, ad + "side")
            if th < 1:
                raise Refused(self.inner, ad + "tile_height")
            if tw < 1:
                raise Refused(self.inner, ad + "tile_width")
            if th > c.rows:
                raise Refused(self.inner, ad + "tile_height")
            if tw > c.k:
                raise Refused(self.inner, ad + "tile_width")
            if "layout" in param:
                raise Refused(self.inner, ad + "layout")
        sampler(self.inner, ad, param.get("dropout_ratio", 0.5),
                param.get("pattern_distribution", []), self.units())


RECURRENT_FIELDS = ("recurrent_dropout_ratio", "recurrent_pattern_distribution",
                    "recurrent_pattern")


def sampler(layer: str, where: str, ratio: float, distribution: list[float],
            units: int) -> None:
    """DropoutPatternSampler's constructor; where: "approx_dropout_param."
    plus the fields' prefix ("recurrent_" for the LSTM's recurrent path)."""
    p = f32(ratio)
    if not (p >= 0) or not (p < 1):               # NaN fails both
        raise Refused(layer, where + "dropout_ratio")
    k = [f32(x) for x in distribution]
    if not k:
        reachable = (units - 1) / units
        if abs(p - reachable) < REACH_MARGIN:
            raise TooClose
        if p > reachable + 1e-12:
            raise Refused(layer, where + "dropout_ratio")
        return
    if any(x < 0 for x in k):
        raise Refused(layer, where + "pattern_distribution")
    total = sum(k)
    if abs(abs(total - 1) - SUM_TOLERANCE) < SUM_MARGIN:
        raise TooClose
    if abs(total - 1) > SUM_TOLERANCE:
        raise Refused(layer, where + "pattern_distribution")
    k = [x / total for x in k]
    while k and k[-1] == 0:
        k.pop()
    if len(k) > units:
        raise Refused(layer, where + "pattern_distribution")
    rate = sum(x * i / (i + 1) for i, x in enumerate(k))
    if abs(abs(rate - p) - RATE_TOLERANCE) < RATE_MARGIN:
        raise TooClose
    if abs(rate - p) > RATE_TOLERANCE:
        raise Refused(layer, where + "pattern_distribution")


# ---- pairs: a consumer taking its producer's pattern ------------------------------

@dataclass
class PairCase:
    """data x -> producer (pattern top h_pattern) -> ReLU -> consumer.

    Each layer's own settings are valid by construction, so that what the
    consumer refuses is the wiring: its pattern, the producer's, the units,
    the slices, or a second bottom that is no pattern top at all.
    """
    name: str                       # the consumer; the producer is name + "_src"
    input_shape: tuple[int, int]    # M x K of x
    producer: dict[str, Any]        # num_output and approx_dropout_param fields
    consumer: dict[str, Any]
    reads: str = "h"                # the consumer's first bottom: "h" (wired) or "x"
    pattern_blob: str = "h_pattern"  # or "fake": a DummyData blob of the same shape
    kind: str = "pair"

    @property
    def producer_name(self) -> str:
        return f"{self.name}_src"

    @staticmethod
    def slices(param: dict[str, Any]) -> int:
        if "batch_slices" in param:
            return param["batch_slices"]
        if param.get("pattern") == "TILE":  # BLOCKS' slices are views
            return 4 if param.get("tile_order") == "BLOCKS" else 1
        output = param.get("side", "OUTPUT") == "OUTPUT"
        return 1 if output and np.float32(param.get("dropout_ratio", 0.5)) <= 0.5 else 2

    @property
    def consumer_k(self) -> int:
        return self.producer["num_output"] if self.reads == "h" else self.input_shape[1]


def _pair_layer_param(rng: random.Random, num_output: int, k: int,
                      producer: bool) -> dict[str, Any]:
    """A setting the layer itself accepts (dp reachable, tiles that fit)."""
    param: dict[str, Any] = {}
    roll = rng.random()
    if roll < 0.08:
        param.update(pattern="TILE", tile_height=1, tile_width=1)
    elif roll < 0.16:
        param["side"] = "INPUT"
    elif rng.random() < 0.6:
        param["layout"] = rng.choice(["STRIDED", "BLOCK"])
    units = (num_output * k if "tile_height" in param else
             k if "side" in param else num_output)
    ratios = [0.0, 0.3, 0.5, 0.7] if producer else [0.0, 0.0, 0.3, 0.5]
    param["dropout_ratio"] = rng.choice([r for r in ratios if r <= (units - 1) / units - 0.05]
                                        or [0.0])
    if rng.random() < 0.4:
        param["batch_slices"] = rng.randint(1, 4)
    return param


def make_pair_case(rng: random.Random, index: int) -> PairCase:
    m, k = rng.choice([1, 2, 3, 5, 8]), rng.randint(4, 40)
    n_producer = rng.randint(4, 40)
    producer = {"num_output": n_producer,
                "param": _pair_layer_param(rng, n_producer, k, producer=True)}
    reads = "x" if rng.random() < 0.12 else "h"
    k_consumer = n_producer if reads == "h" else k
    n_consumer = rng.randint(1, 30)
    consumer = {"num_output": n_consumer,
                "param": _pair_layer_param(rng, n_consumer, k_consumer, producer=False)}
    # unset mostly (the layer's own default); else the same or another count
    # (the plan works on the segments where both patterns are constant)
    roll = rng.random()
    if roll < 0.15:
        consumer["param"]["batch_slices"] = PairCase.slices(producer["param"])
    elif roll < 0.3:
        consumer["param"]["batch_slices"] = PairCase.slices(producer["param"]) % 4 + 1
    else:
        consumer["param"].pop("batch_slices", None)
    return PairCase(f"fc{index}", (m, k), producer, consumer, reads,
                    "fake" if rng.random() < 0.06 else "h_pattern")


class PairOracle:
    """SetUpPatternBottom's checks, in its order (each layer's own settings pass)."""

    def __init__(self, case: PairCase):
        self.case = case

    def verdict(self) -> Optional[Refused]:
        c = self.case
        p_param, c_param = c.producer["param"], c.consumer["param"]
        fake = c.pattern_blob != "h_pattern"
        # a blob of a pattern top's shape that no layer registered names no producer
        pair = (f"Layer {c.name} (pattern bottom '{c.pattern_blob}' from layer "
                f"{'?' if fake else c.producer_name}): ")
        if c_param.get("pattern") == "TILE" or c_param.get("side") == "INPUT":
            return Refused(c.name, "pattern bottom: consumer",
                           pair + "a pattern bottom needs approx_dropout_param.pattern: ROW")
        if fake:  # (found at the first forward: a Split's top is registered only then)
            return Refused(c.name, "second bottom", f"Layer {c.name}: second bottom "
                           f"'{c.pattern_blob}' is not a pattern top")
        drops = (p_param.get("pattern") != "TILE" and p_param.get("side") != "INPUT"
                 and p_param["dropout_ratio"] > 0)
        if not drops:
            return Refused(c.name, "pattern bottom: producer",
                           pair + f"{c.producer_name} does not drop its outputs")
        units = c.producer["num_output"]
        if units != c.consumer_k:
            return Refused(c.name, "pattern bottom: units",
                           pair + f"{c.producer_name} has {units} output units, but the "
                           f"input size K of {c.name} is {c.consumer_k}")
        return None


# ---- nets ------------------------------------------------------------------------

def _value(v: Any) -> str:
    if isinstance(v, str):
        return v                                      # enum
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else repr(v))
    return str(v)


def param_text(param: dict[str, Any]) -> str:
    parts = []
    for key, value in param.items():
        for v in (value if isinstance(value, list) else [value]):
            parts.append(f"{key}: {_value(v)}")
    return " ".join(parts)


def prototxt(case: Case) -> str:
    dims = lambda shape: " ".join(f"dim: {d}" for d in shape)  # noqa: E731
    ad = f"approx_dropout_param {{ {param_text(case.param)} }}"
    if case.kind == "lstm":
        t, n = case.input_shape[:2]
        return (
            "force_backward: true\n"
            'layer { name: "data" type: "DummyData" top: "x" top: "cont"\n'
            f"  dummy_data_param {{ shape {{ {dims(case.input_shape)} }} shape {{ dim: {t} dim: {n} }}\n"
            '    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }\n'
            f'layer {{ name: "{case.name}" type: "ApproxDropoutLSTM" bottom: "x" bottom: "cont" top: "h"\n'
            f"  recurrent_param {{ num_output: {case.num_output}\n"
            '    weight_filler { type: "uniform" min: -0.2 max: 0.2 } '
            'bias_filler { type: "constant" value: 0.1 } }\n'
            f"  {ad} }}\n"
            'layer { name: "loss" type: "Reduction" bottom: "h" top: "loss" loss_weight: 1\n'
            "  reduction_param { operation: SUMSQ } }\n")
    return (
        "force_backward: true\n"
        'layer { name: "data" type: "DummyData" top: "x"\n'
        f"  dummy_data_param {{ shape {{ {dims(case.input_shape)} }} "
        'data_filler { type: "gaussian" std: 1 } } }\n'
        f'layer {{ name: "{case.name}" type: "ApproxDropoutInnerProduct" bottom: "x" top: "y"\n'
        f"  inner_product_param {{ num_output: {case.num_output}\n"
        '    weight_filler { type: "gaussian" std: 0.2 } bias_filler { type: "constant" value: 0.1 } }\n'
        f"  {ad} }}\n"
        'layer { name: "loss" type: "Reduction" bottom: "y" top: "loss" loss_weight: 1\n'
        "  reduction_param { operation: SUMSQ } }\n")


def pair_prototxt(case: PairCase) -> str:
    m, k = case.input_shape
    slices = PairCase.slices(case.producer["param"])
    fake = case.pattern_blob != "h_pattern"

    def layer(name: str, bottoms: list[str], tops: list[str], spec: dict[str, Any]) -> str:
        return (f'layer {{ name: "{name}" type: "ApproxDropoutInnerProduct" '
                + "".join(f'bottom: "{b}" ' for b in bottoms)
                + "".join(f'top: "{t}" ' for t in tops) + "\n"
                f"  inner_product_param {{ num_output: {spec['num_output']}\n"
                '    weight_filler { type: "gaussian" std: 0.2 } '
                'bias_filler { type: "constant" value: 0.1 } }\n'
                f"  approx_dropout_param {{ {param_text(spec['param'])} }} }}\n")
    fake_top = 'top: "fake" ' if fake else ""
    return (
        "force_backward: true\n"
        f'layer {{ name: "data" type: "DummyData" top: "x" {fake_top}'
        f"dummy_data_param {{ shape {{ dim: {m} dim: {k} }} "
        + (f"shape {{ dim: {slices} dim: 4 }} " if fake else "")
        + 'data_filler { type: "gaussian" std: 1 } '
        + ('data_filler { type: "constant" value: 1 } ' if fake else "") + "} }\n"
        + layer(case.producer_name, ["x"], ["h", "h_pattern"], case.producer)
        + 'layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }\n'
        + layer(case.name, [case.reads, case.pattern_blob], ["y"], case.consumer)
        + 'layer { name: "loss" type: "Reduction" bottom: "y" top: "loss" loss_weight: 1\n'
          "  reduction_param { operation: SUMSQ } }\n")


def net_text(case) -> str:
    return pair_prototxt(case) if case.kind == "pair" else prototxt(case)


def generate(seed: int, count: int) -> list[tuple[Any, Optional[Refused]]]:
    rng = random.Random(seed)
    cases = []
    while len(cases) < count:
        if rng.random() < PAIR_SHARE:
            pair = make_pair_case(rng, len(cases))
            cases.append((pair, PairOracle(pair).verdict()))
            continue
        case = make_case(rng, len(cases))
        try:
            cases.append((case, Oracle(case).verdict()))
        except TooClose:
            continue                                  # float32 could decide it either way
    return cases


# ---- the tests ---------------------------------------------------------------------

def test_oracle_matches_hand_checked_cases():
    """The model itself, on cases worked out by hand from the C++ checks."""
    ip = lambda **param: Case("ip", "fc", 8, (2, 10), dict(param))  # noqa: E731
    assert Oracle(ip()).verdict() is None                              # defaults: p 0.5
    assert Oracle(ip(dropout_ratio=0.9)).verdict().field.endswith("dropout_ratio")  # dp <= 8
    assert Oracle(ip(dropout_ratio=0.87)).verdict() is None            # below 7/8: reachable
    assert Oracle(ip(pattern_distribution=[0, 1])).verdict() is None
    assert Oracle(ip(pattern_distribution=[0, 0.5])).verdict().field.endswith("distribution")
    assert Oracle(ip(pattern_distribution=[0, 0, 1])).verdict().field.endswith("distribution")
    assert Oracle(ip(side="INPUT", pattern_distribution=[0] * 9 + [1], dropout_ratio=0.9)
                  ).verdict() is None                                  # K = 10 units
    tile = ip(pattern="TILE", tile_height=4, tile_width=5)             # 2 x 2 tiles
    assert Oracle(tile).units() == 4 and Oracle(tile).verdict() is None
    assert Oracle(ip(pattern="TILE", tile_height=4, tile_width=11)).verdict().field \
        == "approx_dropout_param.tile_width"
    assert Oracle(ip(pattern="TILE", side="INPUT", tile_height=4, tile_width=5)
                  ).verdict().field == "approx_dropout_param.side"
    lstm = Case("lstm", "l", 3, (2, 1, 6), {"pattern": "TILE", "side": "OUTPUT"})
    assert (Oracle(lstm).verdict().layer, Oracle(lstm).verdict().field) == \
        ("l", "approx_dropout_param.side")
    lstm = Case("lstm", "l", 3, (2, 1, 6), {"pattern_distribution": [0] * 6 + [1]})
    assert Oracle(lstm).verdict().layer == "l_x_transform"             # 7 > K = 6
    with pytest.raises(TooClose):
        Oracle(ip(pattern_distribution=[0.5, 0.5 + 1e-4])).verdict()   # sums to 1 + 1e-4
    # layout: ROW only, either side
    assert Oracle(ip(layout="STRIDED", side="INPUT")).verdict() is None
    assert Oracle(ip(pattern="TILE", tile_height=4, tile_width=5, layout="BLOCK")
                  ).verdict().text == "Layer fc: approx_dropout_param.layout"
    lstm = Case("lstm", "l", 3, (2, 1, 6), {"pattern": "TILE", "tile_height": 4,
                                            "tile_width": 2, "layout": "BLOCK"})
    assert Oracle(lstm).verdict().text == "Layer l: approx_dropout_param.layout"
    # the recurrent fields: refused by the inner product, checked by the LSTM
    for field_name, value in (("recurrent_dropout_ratio", 0.3), ("recurrent_pattern", "PER_STEP"),
                              ("recurrent_pattern_distribution", [1.0])):
        assert Oracle(ip(**{field_name: value})).verdict().text == \
            "Layer fc: approx_dropout_param.recurrent_dropout_ratio"  # one message names all
    lstm = lambda **param: Case("lstm", "l", 3, (2, 1, 6), dict(param))  # noqa: E731
    assert Oracle(lstm(recurrent_dropout_ratio=0.5, recurrent_pattern="PER_SEQUENCE")
                  ).verdict() is None
    assert Oracle(lstm(recurrent_dropout_ratio=0.0)).verdict() is None
    for bad in (1.0, -0.1, math.nan, 0.7):                             # 0.7 > 2/3 with 3 units
        assert Oracle(lstm(recurrent_dropout_ratio=bad)).verdict().text == \
            "Layer l: approx_dropout_param.recurrent_dropout_ratio"
    assert Oracle(lstm(recurrent_dropout_ratio=0.6, recurrent_pattern_distribution=[0, 0, 0, 1])
                  ).verdict().text == "Layer l: approx_dropout_param.recurrent_pattern_distribution"
    assert Oracle(lstm(recurrent_dropout_ratio=0.5, recurrent_pattern_distribution=[0, 1])
                  ).verdict() is None
    # a recurrent refusal comes before the LSTM's own side check
    assert Oracle(lstm(recurrent_dropout_ratio=2.0, side="OUTPUT")).verdict().field == \
        "approx_dropout_param.recurrent_dropout_ratio"


def test_pair_oracle_matches_hand_checked_cases():
    def pair(producer=None, consumer=None, **kw):
        return PairCase("c", (2, 10),
                        {"num_output": 6, "param": producer or {"dropout_ratio": 0.5}},
                        {"num_output": 3, "param": consumer or {"dropout_ratio": 0.0}}, **kw)
    assert PairOracle(pair()).verdict() is None
    assert PairOracle(pair(consumer={"dropout_ratio": 0.3, "batch_slices": 2})).verdict() is None
    where = "Layer c (pattern bottom 'h_pattern' from layer c_src): "
    assert PairOracle(pair(reads="x")).verdict().text == \
        where + "c_src has 6 output units, but the input size K of c is 10"
    assert PairOracle(pair({"dropout_ratio": 0.0})).verdict().text == \
        where + "c_src does not drop its outputs"
    assert PairOracle(pair({"dropout_ratio": 0.5, "side": "INPUT"})).verdict().field == \
        "pattern bottom: producer"
    assert PairOracle(pair(consumer={"side": "INPUT"})).verdict().field == \
        "pattern bottom: consumer"
    assert PairOracle(pair({"dropout_ratio": 0.5, "pattern": "TILE"})).verdict().field == \
        "pattern bottom: producer"
    # slice counts may differ (producer 2 by default)
    assert PairOracle(pair(consumer={"dropout_ratio": 0.3, "batch_slices": 3})).verdict() is None
    assert PairOracle(pair({"dropout_ratio": 0.5, "batch_slices": 1},
                           {"dropout_ratio": 0.3, "batch_slices": 4})).verdict() is None
    assert PairOracle(pair(pattern_blob="fake")).verdict().text == \
        "Layer c: second bottom 'fake' is not a pattern top"
    # the consumer's own pattern and slices are checked first, even for a blob
    # that is no pattern top
    assert PairOracle(pair(consumer={"side": "INPUT"}, pattern_blob="fake")).verdict().text \
        .startswith("Layer c (pattern bottom 'fake' from layer ?): a pattern bottom needs")
    assert PairOracle(pair({"dropout_ratio": 0.0}, {"batch_slices": 1}, reads="x")
                      ).verdict().field == "pattern bottom: producer"


def test_generator_covers_every_rule():
    cases = generate(SEED, CASES)
    refused = [v for _, v in cases if v is not None]
    fields = {v.field for v in refused}
    assert {"approx_dropout_param.dropout_ratio", "approx_dropout_param.pattern_distribution",
            "approx_dropout_param.tile_height", "approx_dropout_param.tile_width",
            "approx_dropout_param.side", "inner_product_param.num_output",
            "approx_dropout_param.batch_slices", "approx_dropout_param.tile_order",
            "approx_dropout_param.layout", "approx_dropout_param.recurrent_dropout_ratio",
            "approx_dropout_param.recurrent_pattern_distribution",
            "second bottom", "pattern bottom: consumer", "pattern bottom: producer",
            "pattern bottom: units"} <= fields
    assert 0.3 < len(refused) / len(cases) < 0.75
    for kind, share in (("lstm", 0.1), ("pair", 0.05)):
        some = [(c, v) for c, v in cases if c.kind == kind]
        assert len(some) > share * len(cases), kind
        assert any(v is None for _, v in some) and any(v is not None for _, v in some), kind
    assert any(min(c.input_shape[:1 if c.kind == "ip" else 2]) == 1 for c, _ in cases)
    # the new fields also appear where they are accepted
    valid = [c for c, v in cases if v is None]
    assert any(c.kind == "ip" and "layout" in c.param for c in valid)
    assert any(c.kind == "lstm" and c.param.get("recurrent_dropout_ratio", 0) > 0
               for c in valid)
    assert any(c.kind == "lstm" and "recurrent_pattern_distribution" in c.param for c in valid)
    assert any(c.kind == "pair" and c.consumer["param"]["dropout_ratio"] == 0 for c in valid)


# ---- approx_dropout.prototxt.rules against the oracle -------------------------------
#
# rules.py is the tools' own copy of the layers' rules (convert, apply and the
# NetSpec helpers refuse or size a layer with it before Caffe sees it). The
# oracle above is written independently from the C++; both must agree.

# The oracle's refusals that rules.layer_units (field_problem included) makes
# too: units, tiles and fields. batch_slices, tile_order and the dropout
# ratios are not its business; the main path's distribution is
# rules.distribution_problem's, compared on its own.
RULES_FIELDS = frozenset({
    "inner_product_param.num_output", "approx_dropout_param.side",
    "approx_dropout_param.tile_height", "approx_dropout_param.tile_width",
    "approx_dropout_param.layout", "approx_dropout_param.recurrent_dropout_ratio"})


def _valid_ratio(value: float) -> bool:
    return 0 <= f32(value) < 1                        # NaN: False


def rules_only(case: Case, keep_distribution: bool = False) -> Case:
    """The case with every setting rules.layer_units does not check made
    valid, so that the oracle can refuse it only for a reason rules covers:
    no batch_slices or tile_order, the main path at dropout_ratio 0 with
    dp = 1 (unless keep_distribution), an LSTM's recurrent path likewise
    (unless its recurrent_dropout_ratio is outside [0, 1): field_problem's)."""
    param = {k: v for k, v in case.param.items() if k not in ("batch_slices", "tile_order")}
    if not keep_distribution:
        param.update(dropout_ratio=0.0, pattern_distribution=[1.0])
    if case.kind == "lstm" and _valid_ratio(param.get("recurrent_dropout_ratio", 0.0)):
        param.update(recurrent_dropout_ratio=0.0, recurrent_pattern_distribution=[1.0])
    return replace(case, param=param)


def parsed_layer(caffe_pb2, text: str, name: str):
    net = text_format.Parse(text, caffe_pb2.NetParameter())
    (layer,) = [layer for layer in net.layer if layer.name == name]
    return layer


def rules_disagreements(caffe_pb2, case: Case, verdict: Optional[Refused],
                        counts: dict[str, int]) -> list[str]:
    """Where rules.py and the oracle disagree on one single-layer case."""
    problems = []
    layer = parsed_layer(caffe_pb2, prototxt(case), case.name)
    units = rules.layer_units(layer, case.input_shape)
    # the layer's own settings, with what rules does not check made valid
    only = rules_only(case)
    want = Oracle(only).verdict()
    got = rules.layer_units(parsed_layer(caffe_pb2, prototxt(only), case.name),
                            case.input_shape)
    counts["refused" if want else "accepted"] += 1
    if want is not None and want.field not in RULES_FIELDS:
        problems.append(f"rules_only left the oracle a refusal rules does not cover: {want}")
    if bool(got.problem) != (want is not None):
        problems.append(f"layer_units: {got.problem or 'accepted'!r}; the oracle: "
                        f"{want or 'accepted'}")
    if got.problem != units.problem:  # it reads none of the fields rules_only changed
        problems.append(f"layer_units of the case itself: {units.problem!r}, "
                        f"with only its own rules: {got.problem!r}")
    if units.problem and verdict is None:
        problems.append(f"layer_units refuses what the layer accepts: {units.problem!r}")
    if not units.problem and units.count != Oracle(case).units():
        problems.append(f"layer_units counts {units.count} {units.what}, the oracle "
                        f"{Oracle(case).units()}")
    # the main path's distribution, the units being fine
    param = layer.approx_dropout_param
    if (not units.problem and len(param.pattern_distribution)
            and _valid_ratio(case.param.get("dropout_ratio", 0.5))):
        try:
            want = Oracle(rules_only(case, keep_distribution=True)).verdict()
        except TooClose:
            want = TooClose
        if want is not TooClose:
            counts["distributions"] += 1
            if want is not None and want.field != "approx_dropout_param.pattern_distribution":
                problems.append(f"the oracle refuses more than the distribution: {want}")
            problem = rules.distribution_problem(list(param.pattern_distribution),
                                                 param.dropout_ratio, units)
            if bool(problem) != (want is not None):
                problems.append(f"distribution_problem: {problem or 'accepted'!r}; the "
                                f"oracle: {want or 'accepted'}")
    problems += slices_disagreements(layer, case.param, counts, case.kind == "ip")
    return problems


def slices_disagreements(layer, param: dict[str, Any], counts: dict[str, int],
                         pattern_top: bool = True) -> list[str]:
    """rules' batch slices (the default, the pattern top's rows) and PairCase.slices."""
    problems = []
    want = PairCase.slices(param)
    if "batch_slices" not in param:
        counts["default slices"] += 1
        got = rules.default_batch_slices(layer.approx_dropout_param)
        if got != want:
            problems.append(f"default_batch_slices {got}, PairCase.slices {want}")
    if pattern_top and rules.pattern_slices(layer) != want:
        problems.append(f"pattern_slices {rules.pattern_slices(layer)}, PairCase.slices {want}")
    return problems


def test_prototxt_rules_agree_with_the_oracle(caffe_pb2):
    """On every generated case: rules.layer_units refuses exactly when the
    oracle refuses for a reason it covers (and counts the oracle's units),
    distribution_problem agrees on the main path's distribution, and the
    default batch slices are PairCase.slices (pairs: both layers)."""
    counts = {"refused": 0, "accepted": 0, "distributions": 0, "default slices": 0}
    failures = []
    for case, verdict in generate(SEED, CASES):
        if case.kind == "pair":
            text = pair_prototxt(case)
            problems = [p for spec, name in ((case.producer, case.producer_name),
                                             (case.consumer, case.name))
                        for p in slices_disagreements(parsed_layer(caffe_pb2, text, name),
                                                      spec["param"], counts)]
        else:
            problems = rules_disagreements(caffe_pb2, case, verdict, counts)
        if problems:
            failures.append(f"--- case {case.name} (seed {SEED}): " + "; ".join(problems)
                            + f"\noracle: {verdict or 'accepted'}\n{net_text(case)}")
    assert not failures, f"{len(failures)} cases:\n" + "\n".join(failures[:10])
    assert all(counts.values()), counts              # and none of it was vacuous


def test_fuzz_layer_setup(capsys):
    cases = generate(SEED, CASES)
    start = time.monotonic()
    outcomes = caffe_check.check_nets([caffe_check.Job(net_text(c)) for c, _ in cases],
                                      timeout=60, workers=2)
    elapsed = time.monotonic() - start
    assert len(outcomes) == len(cases)
    failures = []
    for (case, refused), outcome in zip(cases, outcomes):
        problem = judge(case, refused, outcome)
        if problem:
            failures.append(f"--- case {case.name} (seed {SEED}): {problem}\n"
                            f"expected: {'refused: ' + str(refused) if refused else 'valid'}\n"
                            f"child: {outcome.describe()}\n{net_text(case)}")
    with capsys.disabled():
        print(f"\nfuzz: {len(cases)} cases ({sum(r is None for _, r in cases)} valid) "
              f"in {elapsed:.1f} s, seed {SEED}")
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + \
        "\n".join(failures[:10])


def judge(case: Any, refused: Optional[Refused], outcome: caffe_check.Outcome) -> str:
    """What is wrong with the outcome, or ""."""
    if outcome.timed_out:
        return "the child hung"
    if refused is None:
        if not outcome.loaded:
            return "a valid setting was refused or crashed"
        if not outcome.finite:
            return f"not finite after forward + backward: {outcome.report.get('not_finite')}"
        return ""
    if outcome.loaded:
        return "an invalid setting was accepted (silent success)"
    if outcome.signal not in (signal.SIGABRT,):
        return f"ended by signal {outcome.signal} / exit {outcome.exit_code}, not a CHECK"
    want = refused.text
    if want not in outcome.stderr:
        return f"the message does not name the layer and field ({want!r})"
    return ""
