"""Run Caffe's own benchmark, `caffe time`, and read its per-layer table.

`caffe time` logs through glog; this module runs the tool with logging sent to
stderr, parses the "Average time per layer" block and the pass totals, and
formats them as a table (scripts/bench/time_net.py prints it for one net).
Speed comparisons in this project are ratios of such runs, made in the same
script, so that machine load affects both sides.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .. import caffe_env

_LAYER = re.compile(r"\]\s+(\S+)\s+(forward|backward): ([0-9.eE+-]+) ms\.$")
_GLOG_ERROR = re.compile(r"^[EF]\d{4,8} \d\d:")  # glog: severity, [yyyy]mmdd
_TOTAL = re.compile(r"\] Average (Forward|Backward|Forward-Backward)(?: pass)?: "
                    r"([0-9.eE+-]+) ms\.$")


class CaffeTimeError(RuntimeError):
    pass


@dataclass
class Timing:
    """Milliseconds per iteration, as `caffe time` reports them."""
    forward: dict[str, float] = field(default_factory=dict)
    backward: dict[str, float] = field(default_factory=dict)
    forward_total: float = float("nan")
    backward_total: float = float("nan")
    iteration: float = float("nan")   # "Average Forward-Backward"

    def table(self) -> str:
        rows = [f"{'layer':<12} {'forward ms':>11} {'backward ms':>12}"]
        for name, fwd in self.forward.items():
            rows.append(f"{name:<12} {fwd:>11.3f} {self.backward.get(name, 0.0):>12.3f}")
        rows.append(f"{'total':<12} {self.forward_total:>11.3f} {self.backward_total:>12.3f}")
        rows.append(f"forward-backward per iteration: {self.iteration:.3f} ms")
        return "\n".join(rows)


def parse(log: str) -> Timing:
    timing = Timing()
    for line in log.splitlines():
        line = line.rstrip()
        if m := _LAYER.search(line):
            getattr(timing, m.group(2))[m.group(1)] = float(m.group(3))
        elif m := _TOTAL.search(line):
            value = float(m.group(2))
            if m.group(1) == "Forward":
                timing.forward_total = value
            elif m.group(1) == "Backward":
                timing.backward_total = value
            else:
                timing.iteration = value
    if not timing.forward or timing.iteration != timing.iteration:
        raise CaffeTimeError("no 'Average time per layer' table in the caffe "
                             "time output")
    return timing


def caffe_binary(build: Path | None = None) -> Path:
    path = (build or caffe_env.build_dir()) / "tools" / "caffe"
    if not path.is_file():
        raise caffe_env.CaffeNotBuiltError(
            f"no caffe tool at {path}: run scripts/build.sh")
    return path


def run_tool(args: list[str], what: str, gpu: int | None = None,
             build: Path | None = None) -> str:
    """Run `caffe ARGS...` (with -gpu when given) and return its glog output;
    CaffeTimeError names `what` and glog's first error line on failure."""
    cmd = [str(caffe_binary(build)), *args]
    if gpu is not None:
        cmd.append(f"-gpu={gpu}")
    env = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        # glog's fatal/error lines say why; the stack trace after them does not
        why = [ln for ln in proc.stderr.splitlines() if _GLOG_ERROR.match(ln)]
        detail = why[0] if why else "\n".join(proc.stderr.splitlines()[-5:])
        raise CaffeTimeError(f"caffe {args[0]} failed on {what} "
                             f"(exit {proc.returncode}): {detail}")
    return proc.stderr


def run(model: Path, iterations: int = 10, phase: str = "TRAIN",
        gpu: int | None = None, build: Path | None = None) -> Timing:
    if not Path(model).is_file():
        raise CaffeTimeError(f"{model}: no such prototxt")
    return parse(run_tool(["time", f"-model={model}", f"-iterations={iterations}",
                           f"-phase={phase}"], str(model), gpu, build))


def run_rotating(models: dict[str, Path], repeats: int, iterations: int,
                 gpu: int | None = None, build: Path | None = None) -> dict[str, list[Timing]]:
    """Time each model `repeats` times, rotating the order every round, so
    that slow phases of a shared machine are spread over all of them."""
    names = list(models)
    timings: dict[str, list[Timing]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            timings[name].append(run(models[name], iterations, gpu=gpu, build=build))
    return timings
