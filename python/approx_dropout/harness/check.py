"""Load nets in pycaffe in forked children: a Caffe CHECK failure ends only the child.

Caffe reports a bad setting by aborting the process (glog's CHECK prints
"Check failed: ..." to stderr, then SIGABRT), so a net that may be bad is
never loaded in a process that must survive. One driver process imports
pycaffe once and forks a child per net (milliseconds each, against a second
or more to start Python and load Caffe); the child builds the net, runs
forward (and backward) in the requested phase, reports whether every blob's
data and diff and every parameter's data and diff are finite, and exits; the
driver records the exit status and what the child printed to stderr.
``Job(..., setup_only=True)`` only constructs the net (approx_dropout.check).

    check_nets([Job(prototxt_text)])   # from Python: starts the driver, driver_main,
                                       # in a fresh interpreter (JSON in, JSON out)

The driver runs OpenBLAS single-threaded (its worker threads would not
survive a fork) and with glog at WARNING, so children print errors only.
"""
from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from .. import caffe_env


@dataclass
class Job:
    prototxt: str                 # the net, as text
    phase: str = "TRAIN"
    iterations: int = 1           # forward (+ backward) passes
    backward: bool = True
    seed: int = 1
    # also report the net's outputs after every pass ("outputs": one dict per
    # pass) and every parameter gradient of the last pass ("param_diffs"), as
    # flat lists: for comparing two nets' numbers (small nets only). The
    # gradients are zeroed before each backward, as Caffe's solver does (a
    # layer may write only the part of a gradient its pattern touches).
    values: bool = False
    # only construct the net (every layer's SetUp): no pass and no finiteness
    # check, so no blob memory beyond what setup allocates; the report then
    # holds only "shapes". For checking a net's parameters (approx_dropout.check).
    setup_only: bool = False


@dataclass
class Outcome:
    exit_code: Optional[int]      # None when a signal ended the child
    signal: Optional[int]
    stderr: str
    report: Optional[dict[str, Any]] = None
    timed_out: bool = False

    @property
    def loaded(self) -> bool:
        """The net was built and ran (whatever its numbers)."""
        return self.exit_code == 0 and self.report is not None

    @property
    def finite(self) -> bool:
        return self.loaded and bool(self.report and self.report.get("finite"))

    @property
    def check_failure(self) -> str:
        """glog's FATAL line ("Check failed: ...", or a LOG(FATAL) message), or ""."""
        for line in self.stderr.splitlines():
            if "Check failed" in line or re.match(r"F\d{4} ", line):
                return line
        return ""

    def describe(self) -> str:
        how = ("timed out" if self.timed_out else f"signal {self.signal}" if self.signal
               else f"exit {self.exit_code}")
        return f"{how}; stderr: {self.stderr.strip()[-2000:] or '(empty)'}"


# ---- the driver (runs in its own process, see check_nets) -----------------------

def _child(caffe: Any, job: Job, net_path: str, report_fd: int) -> None:
    import numpy as np
    caffe.set_mode_cpu()
    caffe.set_random_seed(job.seed)
    net = caffe.Net(net_path, caffe.TRAIN if job.phase == "TRAIN" else caffe.TEST)
    if job.setup_only:
        shapes = {name: list(blob.shape) for name, blob in net.blobs.items()}
        os.write(report_fd, json.dumps({"shapes": shapes}).encode())
        return
    outputs = []
    for _ in range(job.iterations):
        net.forward()
        if job.values:
            outputs.append({name: net.blobs[name].data.ravel().tolist() for name in net.outputs})
        if job.backward:
            if job.values:
                for params in net.params.values():
                    for p in params:
                        p.diff[...] = 0
            net.backward()
    bad = [f"blob {name}" for name, blob in net.blobs.items()
           if not (np.isfinite(blob.data).all() and np.isfinite(blob.diff).all())]
    bad += [f"param {name}[{i}]" for name, params in net.params.items()
            for i, p in enumerate(params)
            if not (np.isfinite(p.data).all() and np.isfinite(p.diff).all())]
    report = {"finite": not bad, "not_finite": bad,
              "shapes": {name: list(blob.data.shape) for name, blob in net.blobs.items()}}
    if job.values:
        report["outputs"] = outputs
        report["param_diffs"] = {f"{name}[{i}]": p.diff.ravel().tolist()
                                 for name, params in net.params.items()
                                 for i, p in enumerate(params)}
    os.write(report_fd, json.dumps(report).encode())


def _start(caffe: Any, job: Job, net_path: str) -> tuple[int, int, int]:
    err_r, err_w = os.pipe()
    rep_r, rep_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 0
        try:
            os.close(err_r)
            os.close(rep_r)
            os.dup2(err_w, 2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            _child(caffe, job, net_path, rep_w)
        except BaseException:
            traceback.print_exc()
            code = 3
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(err_w)
    os.close(rep_w)
    return pid, err_r, rep_r


def run_jobs(jobs: Sequence[Job], timeout: float = 30.0, workers: int = 2) -> list[Outcome]:
    """Run each job in a forked child of this process, up to `workers` at a time."""
    caffe = caffe_env.import_caffe()
    outcomes: list[Optional[Outcome]] = [None] * len(jobs)
    with tempfile.TemporaryDirectory(prefix="caffe-check-") as tmp:
        sel = selectors.DefaultSelector()
        running: dict[int, dict[str, Any]] = {}  # pid -> state
        queue = list(range(len(jobs)))
        while queue or running:
            while queue and len(running) < max(1, workers):
                i = queue.pop(0)
                path = Path(tmp) / f"net{i}.prototxt"
                path.write_text(jobs[i].prototxt)
                pid, err_r, rep_r = _start(caffe, jobs[i], str(path))
                state = {"index": i, "err": b"", "rep": b"", "open": 2,
                         "deadline": time.monotonic() + timeout, "killed": False}
                running[pid] = state
                sel.register(err_r, selectors.EVENT_READ, (pid, "err"))
                sel.register(rep_r, selectors.EVENT_READ, (pid, "rep"))
            for key, _ in sel.select(timeout=0.1):
                pid, which = key.data
                chunk = os.read(key.fd, 65536)
                state = running[pid]
                if chunk:
                    state[which] += chunk
                else:
                    sel.unregister(key.fd)
                    os.close(key.fd)
                    state["open"] -= 1
            now = time.monotonic()
            for pid, state in list(running.items()):
                if state["open"] and now > state["deadline"] and not state["killed"]:
                    os.kill(pid, signal.SIGKILL)  # its pipes then close
                    state["killed"] = True
                if state["open"] == 0:
                    _, status = os.waitpid(pid, 0)
                    report = None
                    if state["rep"]:
                        try:
                            report = json.loads(state["rep"].decode())
                        except ValueError:
                            report = None
                    outcomes[state["index"]] = Outcome(
                        exit_code=os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                        signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                        stderr=state["err"].decode(errors="replace"), report=report,
                        timed_out=state["killed"])
                    del running[pid]
    return [o for o in outcomes if o is not None]


def driver_main() -> int:
    """The driver: jobs as JSON on stdin, outcomes as JSON on stdout (see check_nets)."""
    request = json.load(sys.stdin)
    jobs = [Job(**job) for job in request["jobs"]]
    outcomes = run_jobs(jobs, request.get("timeout", 30.0), request.get("workers", 2))
    json.dump([asdict(o) for o in outcomes], sys.stdout)
    return 0


# ---- the caller's side -----------------------------------------------------------

# How check_nets starts the driver: a fresh interpreter that imports this
# module (driver_env puts the package on its PYTHONPATH) and runs driver_main.
DRIVER_COMMAND = [sys.executable, "-c",
                  "from approx_dropout.harness.check import driver_main; "
                  "raise SystemExit(driver_main())"]


def driver_env() -> dict[str, str]:
    env = dict(os.environ)
    env["OPENBLAS_NUM_THREADS"] = "1"  # no BLAS worker threads to lose in a fork
    env["OMP_NUM_THREADS"] = "1"
    env["GLOG_minloglevel"] = "1"      # warnings and errors only (CHECK failures are FATAL)
    env.setdefault("APPROX_DROPOUT_BUILD", str(caffe_env.build_dir()))
    # the folder holding this approx_dropout package, for the driver's import
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


def check_nets(jobs: Sequence[Job], timeout: float = 30.0, workers: int = 2,
               total_timeout: float = 600.0) -> list[Outcome]:
    """Run jobs in a fresh driver process (pycaffe imported once there)."""
    request = {"jobs": [asdict(j) for j in jobs], "timeout": timeout, "workers": workers}
    proc = subprocess.run(DRIVER_COMMAND, input=json.dumps(request), capture_output=True,
                          text=True, env=driver_env(), timeout=total_timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"harness.check driver failed (exit {proc.returncode}): "
                           f"{proc.stderr.strip()[-3000:]}")
    return [Outcome(**o) for o in json.loads(proc.stdout)]
