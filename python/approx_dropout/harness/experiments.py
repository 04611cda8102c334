"""Resumable experiment runs: one JSON file per finished training run.

An experiment is a list of runs (net, method, rate, seed, budget). Each
finished run is written atomically to <out>/runs/<key>.json, so an
interrupted experiment resumes where it stopped and a finished one is never
redone; the summary is recomputed from whatever runs exist.
"""
from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from ..files import write_text_atomic
from .results import command_line, describe_machine


@dataclass(frozen=True)
class Run:
    experiment: str
    model: str          # e.g. "784-2048-2048-10"
    method: str         # stock, rdp, rdp_paper, tdp, row, tile
    rate: float
    seed: int
    iterations: int

    @property
    def key(self) -> str:
        return (f"{self.experiment}_{self.model}_p{self.rate:g}_{self.method}"
                f"_s{self.seed}_i{self.iterations}")


def invocation(script: str | Path, argv: list[str] | None,
               gpu: int | None) -> tuple[str, str]:
    """(command line, machine line) recorded with every run of an experiment
    script; script is its file (``__file__``), named from its scripts/ folder on."""
    command = command_line(script, argv if argv is not None else sys.argv[1:])
    return command, f"{describe_machine(gpu)}; {platform.platform()}"


def producing_commands(records: Iterable[dict[str, Any]]) -> str:
    """The command(s) that trained these runs, as recorded in them (a summary
    made later, e.g. with --summary-only, names them, not itself)."""
    return "`; `".join(sorted({rec["command"] for rec in records}))


def producing_machines(records: Iterable[dict[str, Any]]) -> str:
    """The machine(s) the runs were trained on, as recorded in them."""
    return "; ".join(sorted({rec["machine"] for rec in records}))


def load_runs(out: Path) -> dict[str, dict[str, Any]]:
    runs = {}
    for path in sorted((out / "runs").glob("*.json")):
        record = json.loads(path.read_text())
        runs[record["run"]["key"]] = record
    return runs


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def execute(runs: Iterable[Run], out: Path,
            train_one: Callable[[Run, Callable[[int, float], None]], dict[str, Any]],
            machine: str, command: str) -> None:
    """Run every run not finished yet, printing a progress line per test."""
    runs = list(runs)
    todo = [r for r in runs if not (out / "runs" / f"{r.key}.json").exists()]
    print(f"{len(runs) - len(todo)} of {len(runs)} runs already done in {out}", flush=True)
    started = time.perf_counter()
    finished_seconds: list[float] = []
    for n, run in enumerate(todo, start=1):
        run_start = time.perf_counter()

        def progress(iteration: int, train_seconds: float, run=run, n=n) -> None:
            elapsed = time.perf_counter() - run_start
            eta_run = elapsed / iteration * (run.iterations - iteration)
            per_run = (statistics.mean(finished_seconds) if finished_seconds
                       else elapsed / iteration * run.iterations)
            eta_all = eta_run + per_run * (len(todo) - n)
            print(f"[{n}/{len(todo)}] {run.key}: iteration {iteration}/{run.iterations}, "
                  f"{fmt_seconds(elapsed)} elapsed, ETA run {fmt_seconds(eta_run)}, "
                  f"all {fmt_seconds(eta_all)}", flush=True)

        result = train_one(run, progress)
        finished_seconds.append(time.perf_counter() - run_start)
        record = {"run": {**asdict(run), "key": run.key}, "machine": machine,
                  "command": command, "result": result}
        (out / "runs").mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "runs" / f"{run.key}.json", json.dumps(record, indent=1))
    total = time.perf_counter() - started
    print(f"done: {len(todo)} runs in {fmt_seconds(total)}", file=sys.stderr, flush=True)
