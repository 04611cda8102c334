"""Check that Caffe can set a net up, without risking the calling process.

Caffe reports a bad layer parameter (a dropout_ratio of 1.5, a kernel larger
than its input, a bottom that no layer produces) by aborting the process:
glog's CHECK prints "Check failed: ..." and raises SIGABRT, which in a
notebook kills the kernel and in a script ends it without a traceback.
``check(net)`` sets the net up (constructs ``caffe.Net``: every layer's
SetUp, no forward pass) in a forked child of a driver process
(approx_dropout.harness.check), once per phase, and turns a failure into a
``NetCheckError`` carrying Caffe's message, the phase and the layer.

    import approx_dropout
    try:
        approx_dropout.check("net.prototxt")          # a path, prototxt text or a NetParameter
    except approx_dropout.NetCheckError as err:
        print(err)                                     # layer 'fc2' (TRAIN): ... dropout_ratio ...

How the layer is found: a release build of Caffe logs nothing per layer
(Net::Init's "Creating Layer" lines are DLOG, compiled out), so the log
cannot tell. When the message names it ("Layer fc2: ...", as this
project's layers and many of Caffe's do), that name is taken; otherwise
the net's first k layers are set up for a few k at a time (a k-ary search,
each probe a forked child, milliseconds for small nets): Caffe sets layers
up in order, so the shortest prefix that fails with the same message ends
with the layer that failed. A failure after the last layer was set up, or
one that no prefix reproduces, leaves ``layer`` None.
"""
from __future__ import annotations

import math
import os
import re
import signal
import subprocess
from typing import Any, Iterable, Optional, Sequence, Union

from google.protobuf import message as _message
from google.protobuf import text_format

from . import caffe_env
from .harness.check import Job, Outcome, check_nets
from .prototxt import io as prototxt_io

__all__ = ["NetCheckError", "check", "PHASES"]

PHASES = ("TRAIN", "TEST")
# prefixes set up per round of the layer search, and children run at once
_PROBES = 15
_WORKERS = 4
# seconds granted to the driver process beyond its children's timeouts
# (starting Python and importing pycaffe)
_DRIVER_SLACK_S = 120.0

# glog's prefix: severity, date (MMDD, or YYYYMMDD in glog >= 0.7), time,
# thread id, file:line]
_GLOG_FATAL = re.compile(r"^F\d{4}(?:\d{4})? \d\d:\d\d:\d\d\.\d+\s+\S+\s+[^\s\]]+:\d+\] ?(.*)$")
_GLOG_LINE = re.compile(r"^[IWEF]\d{4}(?:\d{4})? \d\d:\d\d:\d\d\.\d+\s")
_CHECK_FAILED = "Check failed: "

# a path (str or os.PathLike), prototxt text (str) or a caffe_pb2.NetParameter (whose
# class exists only once the build's caffe_pb2 is loaded)
NetLike = Union[str, "os.PathLike[str]", Any]


class NetCheckError(ValueError):
    """Caffe could not set the net up (or the net could not be read).

    message: Caffe's own text (after "Check failed: ", or the LOG(FATAL)
        text), without glog's prefix; or what else went wrong (a parse
        error, a child killed by the timeout or a signal).
    layer: the layer Caffe was setting up, or None (unknown, or not a
        layer's failure).
    phase: "TRAIN" or "TEST"; None when the net was not read at all.
    check: glog's full FATAL line, or "" when Caffe printed none.
    """

    def __init__(self, message: str, *, layer: Optional[str] = None,
                 phase: Optional[str] = None, check: str = "") -> None:
        self.message = message
        self.layer = layer
        self.phase = phase
        self.check = check
        super().__init__(self.describe())

    def describe(self) -> str:
        if self.layer is not None:
            where = f"layer {self.layer!r}" + (f" ({self.phase})" if self.phase else "")
        else:
            where = self.phase or ""
        return f"{where}: {self.message}" if where else self.message

    def __str__(self) -> str:
        return self.describe()

    def __reduce__(self):  # keyword-only arguments: pickle them explicitly
        return (_rebuild, (self.message, self.layer, self.phase, self.check))


def _rebuild(message: str, layer: Optional[str], phase: Optional[str],
             check: str) -> NetCheckError:
    return NetCheckError(message, layer=layer, phase=phase, check=check)


# ---- reading the net ----------------------------------------------------------------

def _is_net_parameter(obj: Any) -> bool:
    return (isinstance(obj, _message.Message)
            and obj.DESCRIPTOR.full_name == "caffe.NetParameter")


def _refuse_v1(net: Any, what: str) -> None:
    if len(net.layers):
        raise NetCheckError(f"{what} uses the deprecated V1 'layers' format; convert it "
                            f"with Caffe's upgrade_net_proto_text first")


def _load(net: NetLike) -> Any:
    """A NetParameter (a copy: the caller's is never changed)."""
    if _is_net_parameter(net):
        copy = net.__class__()
        copy.CopyFrom(net)
        _refuse_v1(copy, "the net")
        return copy
    if isinstance(net, os.PathLike) or (isinstance(net, str) and os.path.isfile(net)):
        try:
            return prototxt_io.read_net(net)  # refuses V1 nets itself
        except prototxt_io.PrototxtError as err:
            raise NetCheckError(str(err)) from None
    if isinstance(net, str):
        parsed = prototxt_io.caffe_pb2().NetParameter()
        try:
            text_format.Parse(net, parsed)
        except text_format.ParseError as err:
            if "{" not in net and "\n" not in net.strip():
                raise NetCheckError(f"no such file: {net!r} (nor is it prototxt text: "
                                    f"{err})") from None
            raise NetCheckError(f"cannot parse the text as a Caffe net: {err}") from None
        _refuse_v1(parsed, "the net")
        return parsed
    raise TypeError(f"check() takes a path, prototxt text or a caffe_pb2.NetParameter, "
                    f"not {type(net).__name__}")


def _phase_names(phases: Union[str, int, Iterable[Union[str, int]]]) -> list[str]:
    if isinstance(phases, (str, int)):
        phases = [phases]
    names: list[str] = []
    for phase in phases:
        if isinstance(phase, int) and not isinstance(phase, bool) and 0 <= phase < 2:
            name = PHASES[phase]
        elif isinstance(phase, str) and phase.upper() in PHASES:
            name = phase.upper()
        else:
            raise ValueError(f"phase must be 'TRAIN', 'TEST' (or caffe.TRAIN, caffe.TEST), "
                             f"got {phase!r}")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("no phase to check")
    return names


# ---- reading a failed child's outcome -------------------------------------------------

def _failure(outcome: Outcome, timeout: float) -> tuple[str, str]:
    """(message, glog's FATAL line or "") of a child that did not set the net up."""
    lines = outcome.stderr.splitlines()
    for i, line in enumerate(lines):
        match = _GLOG_FATAL.match(line)
        if not match:
            continue
        text = [match.group(1).rstrip()]
        for more in lines[i + 1:]:  # a LOG(FATAL) message may span lines
            if more.startswith("*** ") or _GLOG_LINE.match(more):
                break
            text.append(more.rstrip())
        message = "\n".join(text).strip()
        if message.startswith(_CHECK_FAILED):
            message = message[len(_CHECK_FAILED):]
        return message, line.rstrip()
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    if outcome.timed_out:
        return (f"Caffe did not finish setting the net up within {timeout:g} s "
                f"(the child was killed)"), ""
    if outcome.signal:
        try:
            name = signal.Signals(outcome.signal).name
        except ValueError:
            name = "unknown signal"
        return f"Caffe died with signal {outcome.signal} ({name})" + (
            f": {last}" if last else ""), ""
    if outcome.exit_code == 0:
        return "the child set the net up but sent no report", ""
    return last or f"the child exited with status {outcome.exit_code}", ""


def _named_in(message: str, names: Sequence[str]) -> Optional[str]:
    """The layer a message names as "Layer NAME:" (the longest such name)."""
    found = [name for name in names if name and f"Layer {name}:" in message]
    return max(found, key=len) if found else None


# ---- running children -------------------------------------------------------------

def _run(nets: Sequence[tuple[str, str]], timeout: float) -> list[Outcome]:
    """Set up each (prototxt text, phase) in a child of one driver process."""
    jobs = [Job(text, phase=phase, setup_only=True) for text, phase in nets]
    workers = min(_WORKERS, len(jobs))
    total = timeout * math.ceil(len(jobs) / workers) + _DRIVER_SLACK_S
    try:
        return check_nets(jobs, timeout=timeout, workers=workers, total_timeout=total)
    except subprocess.TimeoutExpired:
        raise NetCheckError(f"the check's driver process did not finish within {total:g} s "
                            f"(killed)", phase=nets[0][1] if len(nets) == 1 else None) from None


def _prefix(net: Any, length: int) -> str:
    part = net.__class__()
    part.CopyFrom(net)
    del part.layer[length:]
    return prototxt_io.net_to_text(part)


def _locate(net: Any, phase: str, message: str, timeout: float) -> Optional[str]:
    """The layer whose setup fails: the last layer of the shortest failing prefix.

    Caffe sets the layers up in order (and checks their wiring as it goes),
    so setting up the first k layers fails exactly when the failing layer is
    among them. A prefix that fails with another message means the search
    cannot tell: None.
    """
    lo, hi = 0, len(net.layer)  # the first lo layers set up; the first hi do not
    failed_with = message
    while hi - lo > 1:
        count = min(_PROBES, hi - lo - 1)
        lengths = sorted({lo + (hi - lo) * (j + 1) // (count + 1) for j in range(count)})
        outcomes = _run([(_prefix(net, k), phase) for k in lengths], timeout)
        for length, outcome in zip(lengths, outcomes):
            if not outcome.loaded:
                hi, failed_with = length, _failure(outcome, timeout)[0]
                break
            lo = length
    if hi == 0 or failed_with != message:
        return None
    return net.layer[hi - 1].name


# ---- the check ----------------------------------------------------------------------

def _with_inputs(net: Any, phase: str) -> Any:
    from .prototxt import shapes  # pure Python; imported only for this option

    try:
        return shapes.data_as_inputs(net, PHASES.index(phase))
    except prototxt_io.PrototxtError as err:
        text = str(err)
        layer = getattr(err, "layer", None) or next(
            (l.name for l in net.layer if repr(l.name) in text), None)
        raise NetCheckError(text, layer=layer, phase=phase) from None


def check(net: NetLike, phases: Union[str, int, Iterable[Union[str, int]]] = PHASES, *,
          data_as_inputs: bool = False, timeout: float = 60.0) -> None:
    """Set net up in Caffe in each phase, in a child process; raise NetCheckError if it fails.

    Caffe aborts the whole process on a bad layer parameter (a glog CHECK,
    then SIGABRT), so the net is never constructed in this process: a forked
    child builds ``caffe.Net`` (every layer's setup, no forward pass) and
    only its exit status and stderr come back. Caffe's log is captured,
    never printed.

    net: a path (str or os.PathLike of an existing file), prototxt text (a
        str that is not an existing file's path), or a caffe_pb2.NetParameter
        (not modified). Relative paths inside the net (data sources) are
        resolved from the current directory, as Caffe would.
    phases: "TRAIN", "TEST" (or caffe.TRAIN / caffe.TEST), or several; they
        are checked together and the first failing one, in the order given,
        is raised.
    data_as_inputs: first replace the data layers (Data, ImageData, HDF5Data,
        ...) with Input layers of the shapes the prototxt implies
        (approx_dropout.prototxt.shapes.data_as_inputs), to check a net
        whose databases are not on this machine. A shape that cannot be
        inferred raises NetCheckError naming the data layer.
    timeout: seconds for setting the net up in one phase; a child still at
        it then is killed and NetCheckError says so.

    Raises NetCheckError (a ValueError) when the net cannot be read or parsed
    (layer and phase None; V1 'layers' nets are refused: upgrade them with
    Caffe's upgrade_net_proto_text), when a data layer's shape cannot be
    inferred, or when Caffe fails in a phase (message, layer, phase, check:
    see NetCheckError). Raises ValueError for an unknown phase, TypeError
    for another kind of net, caffe_env.CaffeNotBuiltError (an ImportError)
    without a Caffe build, and RuntimeError if the driver process itself
    fails.
    """
    names = _phase_names(phases)
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    caffe_env.pycaffe_dir()  # no build: CaffeNotBuiltError, not a NetCheckError
    base = _load(net)
    per_phase = {phase: _with_inputs(base, phase) if data_as_inputs else base
                 for phase in names}
    outcomes = _run([(prototxt_io.net_to_text(per_phase[phase]), phase) for phase in names],
                    timeout)
    for phase, outcome in zip(names, outcomes):
        if outcome.loaded:
            continue
        message, fatal = _failure(outcome, timeout)
        phase_net = per_phase[phase]
        layer = _named_in(message, [l.name for l in phase_net.layer])
        if layer is None and not outcome.timed_out:
            layer = _locate(phase_net, phase, message, timeout)
        raise NetCheckError(message, layer=layer, phase=phase, check=fatal)
