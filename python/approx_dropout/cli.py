"""approx-dropout: search pattern distributions and rewrite Caffe prototxts.

    approx-dropout search --rate 0.7 --max-dp 16 [--method paper|bounded] [--json]
    approx-dropout apply NET.prototxt [--layer NAME ...] [-o OUT]
    approx-dropout convert NET.prototxt -o OUT [--propagate off|converted|all]
    approx-dropout check NET.prototxt [NET ...] [--phase TRAIN|TEST|both] [--data-as-inputs]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from .prototxt.convert import PATTERNS, PROPAGATE_MODES, convert_net
from .prototxt.fill import (APPROX_LAYER_TYPES, DEFAULT_MAX_DP, FilledLayer,
                            fill_distributions)
from .patterns.search import (DEFAULT_BAND, DEFAULT_RELATIVE_BAND, METHODS, SearchError,
                             SearchResult, pattern_rates, search)
from .files import FileWriteError, check_writable, locked, write_text_atomic
from .prototxt.io import PrototxtError, net_to_text, read_net_file

PROG = "approx-dropout"
# Entries below this are summarised in the text listing (--json lists all).
LISTING_FLOOR = 1e-3


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the message and a pointer to --help)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and 0 <= value < 1):
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _band(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _add_search_options(parser: argparse.ArgumentParser, for_layers: bool = False) -> None:
    if for_layers:
        # None = DEFAULT_MAX_DP, capped per layer at its units; a layer whose
        # units the net does not reveal needs an explicit value (see
        # fill_distribution), so the default must be told apart from it.
        parser.add_argument("--max-dp", type=_positive_int, default=None, metavar="N",
                            help=f"largest pattern period dp searched (default "
                                 f"{DEFAULT_MAX_DP}); each layer caps it at the number of "
                                 f"units its pattern acts on (num_output, input size or "
                                 f"tiles). Needed when a layer's input size cannot be "
                                 f"inferred from the net")
    else:
        parser.add_argument("--max-dp", type=_positive_int, default=DEFAULT_MAX_DP,
                            metavar="N",
                            help="largest pattern period dp searched (default %(default)s)")
    parser.add_argument("--method", choices=METHODS, default="bounded",
                        help="bounded: exact rate, bounded per-iteration spread, most "
                             "sub-models (default; the layers' built-in default). "
                             "paper: Algorithm 1 of Song et al. as published")
    paper = parser.add_argument_group("paper method")
    paper.add_argument("--lambda1", type=float, default=0.9,
                       help="weight of the rate term; lambda2 = 1 - lambda1 (default %(default)s)")
    paper.add_argument("--lr", type=float, default=1.0,
                       help="gradient-descent step (default %(default)s)")
    paper.add_argument("--threshold", type=float, default=1e-12,
                       help="stop when |delta loss| is below this (default %(default)s)")
    paper.add_argument("--max-iter", type=_positive_int, default=20000,
                       help="step cap (default %(default)s)")
    paper.add_argument("--seed", type=int, default=0, help="seed of v's initialisation")
    bounded = parser.add_argument_group("bounded method")
    # The layers' own bands, from patterns.search, so the CLI follows them.
    bounded.add_argument("--band", type=_band, default=DEFAULT_BAND,
                         help="keep periods whose rate (dp-1)/dp is within this of p "
                              "(default %(default)s, as the layers)")
    bounded.add_argument("--relative-band", type=_band, default=DEFAULT_RELATIVE_BAND,
                         help="... and whose kept fraction 1/dp is within this fraction "
                              "of 1-p (default %(default)s, as the layers)")


def _add_no_check(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-check", action="store_true",
                        help="write without first setting the result up in Caffe (in a "
                             "child process, data layers as Inputs of the prototxt's "
                             "shapes; a net Caffe refuses is not written)")


def _search_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.method == "paper":
        return {"lambda1": args.lambda1, "lr": args.lr, "threshold": args.threshold,
                "max_iter": args.max_iter, "seed": args.seed}
    return {"band": args.band, "relative_band": args.relative_band}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=(
        "Approximate Random Dropout for Caffe: search the distribution over the "
        "pattern period dp and write it into prototxt files."))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    p = sub.add_parser("search", help="print the distribution for a dropout rate",
                       description="Search k_1..k_N, the probability of each pattern "
                                   "period dp, for dropout rate p, and print it with "
                                   "its metrics.")
    p.add_argument("--rate", type=_rate, required=True, metavar="P",
                   help="target dropout rate p in [0, 1)")
    _add_search_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    a = sub.add_parser("apply", help="fill pattern_distribution of a net's layers",
                       description="Fill pattern_distribution of every "
                                   "ApproxDropoutInnerProduct / ApproxDropoutLSTM layer "
                                   "(or the named ones) from its own dropout_ratio. "
                                   "Without -o the file is rewritten in place, "
                                   "atomically, after a backup copy (NET.bak); a "
                                   "symbolic link is written through, a read-only "
                                   "file is refused. "
                                   "Comments and formatting are not preserved.")
    a.add_argument("net", metavar="NET.prototxt")
    a.add_argument("--layer", action="append", metavar="NAME",
                   help="only this layer (repeatable)")
    a.add_argument("-o", "--output", metavar="OUT", help="write here instead of in place")
    _add_search_options(a, for_layers=True)
    _add_no_check(a)

    c = sub.add_parser("convert", help="turn InnerProduct [-> ReLU] -> Dropout into "
                                       "ApproxDropoutInnerProduct [-> ReLU]",
                       description="Rewrite InnerProduct -> ReLU -> Dropout (and "
                                   "InnerProduct -> Dropout) chains into "
                                   "ApproxDropoutInnerProduct -> ReLU with the same "
                                   "ratio and a searched distribution. Layer names and "
                                   "parameter blobs are kept, so a .caffemodel still "
                                   "loads. Chains with another activation, or whose "
                                   "blobs are read elsewhere, are refused with the "
                                   "reason. Then (ROW only) each converted layer whose "
                                   "output reaches the next converted layer directly or "
                                   "through one ReLU passes it its pattern (a second top "
                                   "<layer>_pattern, read as a second bottom), so that "
                                   "the next layer skips the inputs that were dropped: "
                                   "the same numbers, computed faster. Comments are not "
                                   "preserved.")
    c.add_argument("net", metavar="NET.prototxt")
    c.add_argument("-o", "--output", metavar="OUT", required=True,
                   help="where to write the converted net")
    c.add_argument("--pattern", choices=PATTERNS, default="ROW",
                   help="ROW: drop output neurons (default); TILE: drop 32x32 weight tiles")
    c.add_argument("--propagate", choices=PROPAGATE_MODES, default="converted",
                   help="wire patterns between layers (ROW only: TILE drops no whole unit, "
                        "so there is nothing for the next layer to skip). off: no; "
                        "converted: between converted layers (default); all: also turn a "
                        "plain InnerProduct fed by a converted layer (through at most a "
                        "ReLU), such as the classifier, into an ApproxDropoutInnerProduct "
                        "with dropout_ratio 0 that only skips (same name and parameters, so "
                        "a .caffemodel still loads). Pairs with any other layer between "
                        "them are left unwired, with the reason")
    _add_search_options(c, for_layers=True)
    _add_no_check(c)

    k = sub.add_parser("check", help="set nets up in Caffe, safely, and report the failing "
                                     "layer",
                       description="Set each net up in Caffe (every layer's setup, no "
                                   "forward pass) in a child process, so that a bad "
                                   "parameter, on which Caffe aborts, is reported: "
                                   "'NET: ok' on stdout, or the phase, the layer and "
                                   "Caffe's message on stderr. Exit status 1 if any net "
                                   "fails.")
    k.add_argument("nets", nargs="+", metavar="NET.prototxt")
    k.add_argument("--phase", choices=("TRAIN", "TEST", "both"), default="both",
                   help="the phase(s) to set the net up in (default: both)")
    k.add_argument("--data-as-inputs", action="store_true",
                   help="replace the data layers by Input layers of the shapes the "
                        "prototxt implies, for nets whose data is not on this machine")
    return parser


def format_result(result: SearchResult) -> str:
    lines = [f"method {result.method}, p = {result.target:g}, N = {result.max_dp}",
             f"  rate              {result.rate:.6f}   sum_i k_i (i-1)/i",
             f"  spread (std)      {result.spread:.4f}     of one iteration's dropped fraction",
             f"  sub-models        {result.sub_models:<8d}   (dp, b) pairs with k_dp > 0; "
             f"effective {result.effective_sub_models:.1f} (exp entropy)",
             f"  compute fraction  {result.compute_fraction:.6f}   sum_i k_i / i = 1 - rate",
             f"  no dropout        {result.no_dropout:.4f}     P(dp = 1)"]
    if result.method == "paper":
        state = "converged" if result.converged else "hit the cap"
        lines.append(f"  steps             {result.iterations} ({state})")
    lines.append("     dp   k_dp        dropped")
    rates = pattern_rates(result.max_dp)
    hidden, hidden_mass = 0, 0.0
    for dp, k in result.support():
        if k >= LISTING_FLOOR:
            lines.append(f"  {dp:5d}   {k:.6f}    {rates[dp - 1]:.4f}")
        else:
            hidden, hidden_mass = hidden + 1, hidden_mass + k
    if hidden:
        lines.append(f"  ... and {hidden} more with k_dp < {LISTING_FLOOR:g} "
                     f"(together {hidden_mass:.4f}; --json lists all)")
    return "\n".join(lines)


def _describe_filled(item: FilledLayer) -> str:
    r = item.result
    text = (f"{item.name}: dropout_ratio {r.target:.6g}, {r.method}, dp <= {item.max_dp}: "
            f"rate {r.rate:.6f}, spread {r.spread:.4f}, {r.sub_models} sub-models")
    return text + (f" ({item.note})" if item.note else "")


def _report_replaced(item: FilledLayer) -> None:
    """Say which distribution a layer had before: apply never replaces one silently."""
    if not item.replaced:
        return
    old = "[" + ", ".join(f"{v:.6g}" for v in item.replaced) + "]"
    if item.replaced_problem:
        _warn([f"replaced an invalid pattern_distribution {old}: {item.replaced_problem} "
               f"(Caffe would refuse the layer)"], f"{item.name}: ")
    else:
        print(f"{PROG}: note: {item.name}: replaced pattern_distribution {old}",
              file=sys.stderr)


def _warn(messages: Sequence[str], where: str = "") -> None:
    for message in messages:
        print(f"{PROG}: warning: {where}{message}", file=sys.stderr)


def _max_dp_flag(args: argparse.Namespace) -> str:
    return "" if args.max_dp is None else f" --max-dp {args.max_dp}"


def _in_place(path: Path, source: Path) -> bool:
    return path.exists() and source.exists() and os.path.samefile(path, source)


@contextmanager
def _rewriting(source: Path, output: Path) -> Iterator[tuple[Any, bytes]]:
    """Read source while holding the output's lock, until the write is done.

    A read-only or otherwise unwritable output is refused before any work,
    and the lock makes a concurrent rewrite of the same file wait for this
    one instead of starting from the same original (which would lose one of
    the two updates).
    """
    check_writable(output)
    with locked(output):
        yield read_net_file(source)


def _check_in_caffe(net, original, args: argparse.Namespace) -> None:
    """Set the net about to be written up in Caffe, both phases, in a child
    process (approx_dropout.check): a net Caffe would refuse is not written.
    Data layers become Inputs of the shapes the prototxt gives; where it
    does not give them, or without a Caffe build, the net is written
    unchecked, with a note."""
    if args.no_check:
        return
    from . import caffe_env
    from .net_check import NetCheckError, check
    from .prototxt import shapes as net_shapes

    why = ""
    python_layers = [x.name for x in net.layer if x.type == "Python"]
    if python_layers:
        why = f"it has Python layers ({', '.join(python_layers)})"
    else:
        try:
            for phase in (net_shapes.TRAIN, net_shapes.TEST):
                net_shapes.data_as_inputs(net, phase)
            caffe_env.pycaffe_dir()
        except (PrototxtError, caffe_env.CaffeNotBuiltError) as err:
            why = str(err)
    if why:
        print(f"{PROG}: note: not set up in Caffe before writing: {why}", file=sys.stderr)
        return
    try:
        check(net, data_as_inputs=True)
    except NetCheckError as err:
        # A net Caffe refused before the rewrite (a layer this build lacks, a
        # guessed data shape) is written with a note, not blamed on the tool.
        try:
            check(original, data_as_inputs=True)
        except NetCheckError as before:
            print(f"{PROG}: note: not set up in Caffe before writing: the original net "
                  f"fails too: {before}", file=sys.stderr)
            return
        raise PrototxtError(f"Caffe refuses the result, so nothing was written: {err}") from None
    except RuntimeError as err:  # the check's own driver failed
        print(f"{PROG}: note: not set up in Caffe before writing: {err}", file=sys.stderr)


def _write(path: Path, text: str, source: Path, original: bytes) -> None:
    in_place = _in_place(path, source)
    # In place, the file must still hold what was read: anything else means
    # another program changed it meanwhile, and replacing it would lose that.
    backup = write_text_atomic(path, text, backup=in_place,
                               expect=original if in_place else None)
    print(f"wrote {path}", file=sys.stderr)
    note = f"; the original is kept as {backup}" if backup else ""
    print(f"{PROG}: note: comments and formatting of {source} are not carried over{note}",
          file=sys.stderr)


def cmd_search(args: argparse.Namespace) -> int:
    result = search(args.rate, args.max_dp, args.method, **_search_options(args))
    if args.json:
        print(json.dumps(result.as_dict(), indent=1))
    else:
        print(format_result(result))
    _warn(result.warnings)
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    source = Path(args.net)
    output = Path(args.output) if args.output else source
    with _rewriting(source, output) as (net, original):
        before = net.__class__()
        before.CopyFrom(net)  # fill_distributions fills net in place
        filled = fill_distributions(net, args.layer, args.max_dp, args.method,
                                    _search_options(args))
        for item in filled:
            print(_describe_filled(item))
            _warn(item.result.warnings, f"{item.name}: ")
            _report_replaced(item)
        _check_in_caffe(net, before, args)
        header = (f"pattern_distribution filled by: {PROG} apply {source.name} "
                  f"--method {args.method}{_max_dp_flag(args)}")
        _write(output, net_to_text(net, header), source, original)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    source = Path(args.net)
    output = Path(args.output)
    with _rewriting(source, output) as (net, original):
        return _convert(args, source, output, net, original)


def _convert(args: argparse.Namespace, source: Path, output: Path, net,
             original: bytes) -> int:
    converted, report = convert_net(net, args.max_dp, args.method, args.pattern,
                                    _search_options(args), propagate=args.propagate)
    for name, why in report.refused:
        print(f"{PROG}: not converted: {name}: {why}", file=sys.stderr)
    if not report.converted:
        dropouts = [layer.name for layer in net.layer if layer.type == "Dropout"]
        approx = [layer.name for layer in net.layer if layer.type in APPROX_LAYER_TYPES]
        if dropouts:
            raise PrototxtError(f"nothing to convert in {source}: none of its Dropout layers "
                                f"qualifies (reasons above); nothing written")
        if not approx:
            raise PrototxtError(f"{source} has no Dropout layer: nothing to convert; "
                                f"nothing written")
        # Converting twice is not an error: scripts may run convert unconditionally.
        done = f"{source} is already converted ({', '.join(approx)}: approximate dropout)"
        if _in_place(output, source):
            print(f"{done}; nothing to do, nothing written")
            return 0
        print(f"{done}; nothing to convert, {output} is a copy")
        header = f"Copied by: {PROG} convert {source.name} (already converted)"
        _write(output, net_to_text(net, header), source, original)
        return 0
    for chain, item in zip(report.converted, report.filled):
        print(f"converted {chain}: {_describe_filled(item)}")
        _warn(item.result.warnings, f"{item.name}: ")
    for wiring in report.wired:
        print(wiring.describe())
    for producer, consumer, why in report.not_wired:
        print(f"{PROG}: not wired: {producer} -> {consumer}: {why}", file=sys.stderr)
    for producer, consumer in report.could_skip:
        print(f"{PROG}: note: {consumer}, a plain InnerProduct reading {producer}'s output, "
              f"could skip the inputs {producer} drops: --propagate all", file=sys.stderr)
    _check_in_caffe(converted, net, args)
    header = (f"Converted by: {PROG} convert {source.name} --pattern {args.pattern} "
              f"--propagate {args.propagate} --method {args.method}{_max_dp_flag(args)}")
    _write(output, net_to_text(converted, header), source, original)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .caffe_env import CaffeNotBuiltError
    from .net_check import NetCheckError, check

    phases = ("TRAIN", "TEST") if args.phase == "both" else (args.phase,)
    failed = False
    for net in args.nets:
        try:
            check(Path(net), phases, data_as_inputs=args.data_as_inputs)
        except NetCheckError as err:
            print(f"{PROG} check: {net}: {err}", file=sys.stderr)
            failed = True
        except CaffeNotBuiltError as err:
            print(f"{PROG} check: error: {err}", file=sys.stderr)
            return 1
        else:
            print(f"{net}: ok", flush=True)
    return 1 if failed else 0


COMMANDS = {"search": cmd_search, "apply": cmd_apply, "convert": cmd_convert,
            "check": cmd_check}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    # A net that cannot be used (PrototxtError) and a file that cannot be
    # written (FileWriteError, from approx_dropout.files, which knows nothing
    # of prototxt) are separate errors, neither a kind of the other: both end
    # the command the same way, one line on stderr and exit status 1.
    except (PrototxtError, FileWriteError, SearchError) as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
