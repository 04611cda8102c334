"""The methods of the experiments and benchmarks: one name, one meaning.

A method is a named setting of the approximate layers. The experiments and
benchmarks run it, and record its results, under its name (run keys, the keys
of a benchmark's JSON, the rows and columns of the summaries), so a name
keeps the meaning its committed results were recorded with: a new setting
gets a new name. Two vocabularies, one per model:

- MLP methods: method_settings, method_label, METHOD_HELP. Built by
  prototxt.nets.mlp_for_method; used by scripts/bench/bench_mlp.py,
  bench_train.py, scripts/experiments/exp_mlp.py and the GPU bundle.
- LSTM LM methods: LM_METHODS, lm_method_settings, lm_method_label,
  LM_METHOD_HELP. Built by prototxt.nets.lm_for_method; used by
  scripts/bench/bench_lstm.py, scripts/experiments/exp_lstm.py and the GPU
  bundle.

Pure Python: importing it loads neither Caffe nor protobuf (building a
method's net, in prototxt.nets, needs the build).
"""
from __future__ import annotations

import re
from typing import NamedTuple, Optional

# ---- MLP methods: a prototxt.nets.mlp flavour plus approx_dropout_param fields -----

RDP_LAYOUTS = ("STRIDED", "BLOCK")  # approx_dropout_param.layout (ROW only)

# Methods of the experiments and benchmarks: a flavour plus approx_dropout_param
# fields, so that the layers' defaults and the paper's settings sit side by side.
# Every RDP method names its layout and slices, so that a method keeps the
# meaning it had when its results were recorded whatever the layer's default
# becomes (rdp without _sS is 2 slices, the layer's default when those results
# were recorded, and still its default above p = 0.5).
METHOD_HELP = ("stock; rdp / rdp_sS: strided layout (the paper's; unit j kept iff "
               "j mod dp = b), 2 or S batch slices; "
               "rdp_block / rdp_block_sS: block layout (dp contiguous blocks); "
               "rdp_prop / rdp_prop_sS: block layout, each layer's pattern passed to the "
               "next, which skips the inputs it drops (the classifier too); "
               "rdp_strided_prop / rdp_strided_prop_sS: the same with the strided layout; "
               "rdp_paper: the paper's RDP (strided, its searched distribution, one "
               "pattern per batch); tdp / tdp_sS: diagonal tiles, 1 (the layer's "
               "defaults) / S slices; tdp_blocks / tdp_blocks_sS: tiles in dp x dp blocks "
               "of contiguous tiles (every kept block a view), 1 / S slices; "
               "tdp_s1_rowmajor: the paper's TDP (row-major tiles, one pattern per batch); "
               "baselines for TDP: dropconnect_tile / "
               "dropconnect_weight / _sS: Bernoulli DropConnect of 32 x 32 tiles or of "
               "single weights, one mask per batch / per each of S slices (a dense "
               "reference, not a speed-up); stock_input: stock Dropout on each hidden "
               "layer's input instead of its output (where TDP's noise acts); rdp_input / "
               "rdp_input_sS: RDP dropping the same inputs (side INPUT, block, 2 / S "
               "slices)")

_RDP_METHOD = re.compile(r"rdp(?P<variant>_block|_prop|_strided_prop)?"
                         r"(?:_s(?P<slices>[1-9][0-9]*))?")
_TDP_METHOD = re.compile(r"tdp(?P<blocks>_blocks)?(?:_s(?P<slices>[1-9][0-9]*))?")
_DROP_CONNECT_METHOD = re.compile(r"dropconnect_(?P<unit>tile|weight)"
                                  r"(?:_s(?P<slices>[1-9][0-9]*))?")
_RDP_INPUT_METHOD = re.compile(r"rdp_input(?:_s(?P<slices>[1-9][0-9]*))?")
# variant -> (layout, propagate)
_RDP_VARIANTS = {None: ("STRIDED", False), "_block": ("BLOCK", False),
                 "_prop": ("BLOCK", True), "_strided_prop": ("STRIDED", True)}


class MethodSettings(NamedTuple):
    flavour: str                  # one of prototxt.nets.MLP_FLAVOURS
    fields: dict[str, object]     # approx_dropout_param fields of every approximate layer
    paper_distribution: bool      # the paper's searched distribution (N = widest layer)
    propagate: bool = False       # mlp(propagate=True): patterns wired layer to layer


def method_settings(method: str) -> MethodSettings:
    """The nets flavour, approx_dropout_param fields and options of a method."""
    if method in ("stock", "stock_input"):
        return MethodSettings(method, {}, False)
    if method == "rdp_paper":
        return MethodSettings("rdp", {"batch_slices": 1, "layout": "STRIDED"}, True)
    if method == "tdp_s1_rowmajor":
        return MethodSettings("tdp", {"batch_slices": 1, "tile_order": "ROW_MAJOR"}, False)
    rdp = _RDP_METHOD.fullmatch(method)
    if rdp:
        layout, propagate = _RDP_VARIANTS[rdp.group("variant")]
        fields: dict[str, object] = {"batch_slices": int(rdp.group("slices") or 2),
                                     "layout": layout}
        return MethodSettings("rdp", fields, False, propagate)
    tdp = _TDP_METHOD.fullmatch(method)
    if tdp:  # TILE has no layout (the layer refuses one)
        # named, so that a method keeps its tiles whatever the default becomes
        order = "BLOCKS" if tdp.group("blocks") else "DIAGONAL"
        return MethodSettings("tdp", {"tile_order": order,
                                      "batch_slices": int(tdp.group("slices") or 1)}, False)
    drop_connect = _DROP_CONNECT_METHOD.fullmatch(method)
    if drop_connect:
        return MethodSettings("dropconnect", {
            "drop_connect_unit": f"DROP_CONNECT_{drop_connect.group('unit').upper()}",
            "batch_slices": int(drop_connect.group("slices") or 1)}, False)
    rdp_input = _RDP_INPUT_METHOD.fullmatch(method)
    if rdp_input:
        return MethodSettings("rdp_input", {"batch_slices": int(rdp_input.group("slices") or 2),
                                            "layout": "BLOCK"}, False)
    raise ValueError(f"unknown method {method!r} ({METHOD_HELP})")


def method_label(method: str) -> str:
    """A method's name in tables and plots: layout, slices and propagation."""
    settings = method_settings(method)
    fields = settings.fields
    if settings.flavour == "stock":
        return "stock Dropout"
    if settings.flavour == "stock_input":
        return "stock Dropout on the inputs"
    slices = fields.get("batch_slices")
    per = "1 mask/batch" if slices == 1 else f"{slices} slices"
    if settings.flavour == "dropconnect":
        unit = "32 x 32 tiles" if fields["drop_connect_unit"] == "DROP_CONNECT_TILE" else "weights"
        return f"Bernoulli DropConnect, {unit}, {per}"
    if settings.flavour == "rdp_input":
        return f"RDP on the inputs, block, {slices} slices"
    if settings.flavour == "tdp":
        named = {"tdp": "TDP (default: diagonal, 1 pattern/batch)",
                 "tdp_s1_rowmajor": "TDP, row-major, 1 pattern/batch (paper)"}
        if method in named:
            return named[method]
        order = "blocks" if fields.get("tile_order") == "BLOCKS" else "diagonal"
        return f"TDP, {order}, " + ("1 pattern/batch" if slices == 1 else f"{slices} slices")
    layout = str(fields["layout"])
    parts = ["RDP", layout.lower()]
    if settings.paper_distribution:
        parts.append("paper's dist.")
    unnamed_slices = (rdp := _RDP_METHOD.fullmatch(method)) and not rdp.group("slices")
    defaults = layout == "BLOCK" and unnamed_slices and not settings.propagate
    parts.append("2 slices (layer defaults at p > 0.5)" if defaults
                 else "2 slices (default at p > 0.5)" if unnamed_slices
                 else "1 pattern/batch" if slices == 1 else f"{slices} slices")
    if settings.propagate:
        parts.append("propagated")
    label = ", ".join(parts)
    paper_settings = layout == "STRIDED" and slices == 1 and not settings.propagate
    return label + (" (paper)" if paper_settings and not settings.paper_distribution else "")


# ---- LSTM LM methods: a prototxt.nets.lm flavour plus recurrent dropout --------------

RECURRENT_PATTERNS = ("PER_STEP", "PER_SEQUENCE")  # approx_dropout_param.recurrent_pattern


class LMMethodSettings(NamedTuple):
    flavour: str                             # one of prototxt.nets.LM_FLAVOURS
    # also drop hidden units of h_{t-1} on each ApproxDropoutLSTM's recurrent
    # path, at the input dropout rate (recurrent_dropout_ratio = p)
    recurrent: bool = False
    # with recurrent: one of RECURRENT_PATTERNS, always named (not left to the
    # layer's default); None without recurrent dropout
    recurrent_pattern: Optional[str] = None

    def lm_options(self, rate: float) -> dict[str, object]:
        """prototxt.nets.lm's flavour and dropout arguments at input rate `rate`."""
        return {"flavour": self.flavour, "rate": rate,
                "recurrent": rate if self.recurrent else 0.0,
                "recurrent_pattern": self.recurrent_pattern}


class LMMethod(NamedTuple):
    settings: LMMethodSettings
    label: str        # tables and plots (exp_lstm's summary)
    short_label: str  # the same, short: the columns of bench_lstm's wide tables


# name -> method, in table order. Every name here means one thing in every tool
# (bench_lstm, exp_lstm, the GPU bundle). The committed results under these
# names were recorded with the layers' defaults for everything not named here:
# input patterns in the BLOCK layout with 2 batch slices (ROW), diagonal tiles
# with one pattern per batch (TILE); the quick runs of scripts/results/lstm_lm
# (lstm_lm-i300, stock / row / tile) predate those fields and ran the layers'
# only settings then (strided rows, row-major tiles, one pattern per batch).
# Recurrent dropout was recorded PER_STEP (bench_lstm's row_rec and tile_rec
# with the layer's default, exp_lstm's row_rec named) and PER_SEQUENCE
# (exp_lstm's row_rec_seq).
LM_METHODS: dict[str, LMMethod] = {
    "stock": LMMethod(LMMethodSettings("stock"), "stock Dropout", "stock"),
    "row": LMMethod(LMMethodSettings("row"), "ROW (input)", "ROW"),
    "tile": LMMethod(LMMethodSettings("tile"), "TILE (input)", "TILE"),
    "row_rec": LMMethod(LMMethodSettings("row", True, "PER_STEP"),
                        "ROW input + recurrent (per step)", "ROW+rec"),
    "row_rec_seq": LMMethod(LMMethodSettings("row", True, "PER_SEQUENCE"),
                            "ROW input + recurrent (per sequence)", "ROW+rec/seq"),
    "tile_rec": LMMethod(LMMethodSettings("tile", True, "PER_STEP"),
                         "TILE input + recurrent (per step)", "TILE+rec"),
}

LM_METHOD_HELP = ("; ".join(f"{name}: {method.label}" for name, method in LM_METHODS.items())
                  + " (recurrent: h_{t-1} dropped on each LSTM's recurrent path at the "
                    "input rate)")


def _lm_method(method: str) -> LMMethod:
    try:
        return LM_METHODS[method]
    except KeyError:
        raise ValueError(f"unknown LSTM method {method!r} ({LM_METHOD_HELP})") from None


def lm_method_settings(method: str) -> LMMethodSettings:
    """The nets.lm flavour and recurrent dropout of an LSTM LM method."""
    return _lm_method(method).settings


def lm_method_label(method: str, short: bool = False) -> str:
    """An LSTM LM method's name in tables and plots (short: in a wide table's columns)."""
    found = _lm_method(method)
    return found.short_label if short else found.label
