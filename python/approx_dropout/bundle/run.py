"""Run an unpacked GPU bundle: its gtests, then stock vs approx `caffe time`.

Made for a GPU machine without package registries: it needs the standard
library only (and of this package harness.caffe_time and caffe_env, which
need no more; tests check that). Checks every file against MANIFEST.json,
finds the CUDA runtime libraries of the host, runs the new layers' gtests for
the device (GPUDevice types; CPUDevice with --cpu), then times each group of
bundle nets (stock and approximate flavours of one model) with `caffe time`,
rotating the order, and reports the median time per iteration and the ratio
stock / approx. Writes OUT/results.json, OUT/results.md, OUT/gtest.xml and
OUT/run.log. Benchmarks stop, and say so, once --budget seconds have passed.

The bundle's own entry, run_bundle.py at its top (written by bundle.pack),
puts the bundle's python/ on sys.path and calls main with its own folder as
--bundle; scripts/run_gpu_bundle.sh unpacks an archive and runs it:

    python3 BUNDLE/run_bundle.py --out OUT [--cpu]
"""
from __future__ import annotations

import argparse
import fnmatch
import glob
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import TextIO

from ..harness import caffe_time

# Ours: the typed tests' device is the /N suffix (0, 1: CPU float/double;
# 2, 3: GPU float/double); the sampler, search-table and death tests run once.
OURS = ["ApproxDropoutInnerProductLayerTest", "ApproxDropoutLSTMLayerTest",
        "DropConnectInnerProductLayerTest"]  # host code, also in GPU mode
DEVICE_FREE = ("*DeathTest*:DropoutPattern*:DefaultPatternDistribution*:"
               "ApproxDropoutOpsTest*")
# GPU runs only: the GPU primitives against the CPU ones
GPU_ONLY = "ApproxDropoutOpsGpuTest*"
CUDA_LIBRARY_GLOBS = [
    "{cuda_home}/lib64", "{cuda_home}/lib", "{cuda_home}/targets/x86_64-linux/lib",
    "/usr/local/cuda/lib64", "/usr/local/cuda/lib", "/usr/local/cuda/targets/x86_64-linux/lib",
    "/usr/local/cuda-*/lib64", "/usr/lib/x86_64-linux-gnu",
    # pip's nvidia-* wheels (as PyTorch images carry them)
    "/usr/local/lib/python3*/dist-packages/nvidia/*/lib", "/opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib",
    "/usr/local/lib/python3*/site-packages/nvidia/*/lib",
]
CUDA_LIBRARIES = ("libcudart.so.13", "libcublas.so.13", "libcurand.so.10")


class RunError(RuntimeError):
    pass


def sha256(path: Path) -> str:
    """The file's sha256, as MANIFEST.json records it (bundle.pack uses this one too)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Log:
    """Prints and keeps a copy in OUT/run.log."""

    def __init__(self, path: Path) -> None:
        self.file: TextIO = open(path, "a")

    def __call__(self, message: str) -> None:
        print(message, flush=True)
        self.file.write(message + "\n")
        self.file.flush()


def verify(bundle: Path) -> dict:
    path = bundle / "MANIFEST.json"
    if not path.is_file():
        raise RunError(f"{bundle} has no MANIFEST.json: not an unpacked bundle")
    manifest = json.loads(path.read_text())
    for rel, entry in manifest["files"].items():
        file = bundle / rel
        if not file.is_file():
            raise RunError(f"bundle file missing: {rel}")
        if sha256(file) != entry["sha256"]:
            raise RunError(f"bundle file changed since packing (sha256 differs): {rel}")
    return manifest


def cuda_library_dirs() -> list[str]:
    """Folders holding the CUDA runtime libraries that the bundle leaves to the host."""
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    dirs: list[str] = []
    for pattern in CUDA_LIBRARY_GLOBS:
        for d in sorted(glob.glob(pattern.format(cuda_home=cuda_home))):
            if d not in dirs and any(Path(d, lib).exists() for lib in CUDA_LIBRARIES):
                dirs.append(d)
    return dirs


def set_library_path(bundle: Path, cuda: bool) -> str:
    dirs = [str(bundle / "lib")] + (cuda_library_dirs() if cuda else [])
    old = os.environ.get("LD_LIBRARY_PATH")
    os.environ["LD_LIBRARY_PATH"] = ":".join(dirs + ([old] if old else []))
    for binary in ("tools/caffe", "test/caffe_tests"):
        out = subprocess.run(["ldd", str(bundle / binary)], capture_output=True, text=True).stdout
        missing = sorted({ln.split()[0] for ln in out.splitlines() if "not found" in ln})
        if missing:
            raise RunError(f"{binary} needs {', '.join(missing)}, found neither in the bundle "
                           f"nor in {', '.join(dirs[1:]) or 'any CUDA folder'}; set CUDA_HOME "
                           f"or LD_LIBRARY_PATH to the CUDA 13 runtime libraries")
    return os.environ["LD_LIBRARY_PATH"]


def gpu_description() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RunError(f"nvidia-smi did not answer ({err}): no GPU here? use --cpu") from err
    if out.returncode != 0 or not out.stdout.strip():
        raise RunError(f"nvidia-smi found no GPU ({out.stderr.strip()}); use --cpu")
    return out.stdout.strip().splitlines()[0]


def gtest_filter(cpu: bool) -> str:
    devices = ("0", "1") if cpu else ("2", "3")
    return ":".join([f"{t}/{d}.*" for t in OURS for d in devices] + [DEVICE_FREE]
                    + ([] if cpu else [GPU_ONLY]))


def parse_gtest_output(output: str) -> tuple[int, list[str]]:
    """(tests passed, names of failed tests) from gtest's summary."""
    passed = re.search(r"^\[  PASSED  \] (\d+) test", output, re.M)
    # "[  FAILED  ] Suite/2.Name, where TypeParam = ..." (not the "N tests" count line)
    failed = re.findall(r"^\[  FAILED  \] ([A-Za-z_][\w/]*\.\w+)", output, re.M)
    return (int(passed.group(1)) if passed else 0), sorted(set(failed))


def run_gtests(bundle: Path, out: Path, pattern: str, log: Log, timeout: float) -> dict:
    cmd = [str(bundle / "test" / "caffe_tests"), f"--gtest_filter={pattern}",
           f"--gtest_output=xml:{out / 'gtest.xml'}"]
    log(f"gtests: {' '.join(cmd[1:2])}")
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, GLOG_minloglevel="2"))
        output, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        partial = err.stdout or ""
        if isinstance(partial, bytes):
            partial = partial.decode(errors="replace")
        output, rc = f"{partial}\ntimed out after {timeout:g} s", 124
    (out / "gtest.log").write_text(output)
    passed, failed = parse_gtest_output(output)
    result = {"filter": pattern, "exit_code": rc, "seconds": round(time.perf_counter() - start, 1),
              "passed": passed, "failed": failed}
    log(f"gtests: {result['passed']} passed, {len(result['failed'])} failed, exit {rc}, "
        f"{result['seconds']} s")
    if result["passed"] == 0 and rc == 0:
        result["exit_code"] = 1  # a filter that matched nothing tested nothing
        log("gtests: error: the filter matched no test")
    return result


def net_groups(bundle: Path, only: list[str]) -> dict[str, dict[str, Path]]:
    """group -> method -> prototxt, for nets/<group>__<method>.prototxt."""
    groups: dict[str, dict[str, Path]] = {}
    for path in sorted((bundle / "nets").glob("*.prototxt")):
        group, flavour = path.stem.split("__", 1)
        if not only or any(fnmatch.fnmatch(group, pattern) for pattern in only):
            groups.setdefault(group, {})[flavour] = path
    return groups


def run_benchmarks(bundle: Path, groups: dict[str, dict[str, Path]], gpu: int | None,
                   repeats: int, iterations: dict[str, int], deadline: float,
                   log: Log) -> list[dict]:
    rows = []
    for group, models in groups.items():
        if time.monotonic() > deadline:
            log(f"bench {group}: skipped, the time budget is spent")
            rows.append({"group": group, "skipped": "time budget spent"})
            continue
        its = iterations["lm" if group.startswith("lm") else "mlp"]
        try:
            timings = caffe_time.run_rotating(models, repeats, its, gpu, build=bundle)
        except caffe_time.CaffeTimeError as err:
            log(f"bench {group}: error: {err}")
            rows.append({"group": group, "error": str(err)})
            continue
        median = {f: statistics.median(t.iteration for t in runs) for f, runs in timings.items()}
        row = {"group": group, "iterations": its, "repeats": repeats,
               "ms_per_iteration": median,
               "runs_ms": {f: [t.iteration for t in runs] for f, runs in timings.items()},
               "speedup": {f: median["stock"] / m for f, m in median.items()
                           if f != "stock" and m > 0}}
        rows.append(row)
        log(f"bench {group}: " + ", ".join(f"{f} {m:.3f} ms" for f, m in median.items())
            + " | " + ", ".join(f"{f} {s:.2f}x" for f, s in row["speedup"].items()))
    return rows


def markdown(results: dict) -> str:
    lines = [f"# GPU bundle run ({results['device']})", "",
             f"gtests: {results['gtests']['passed']} passed, "
             f"{len(results['gtests']['failed'])} failed (filter `{results['gtests']['filter']}`)",
             "", "| model | stock ms | approx ms | speedup |", "|---|---|---|---|"]
    for row in results["benchmarks"]:
        if "ms_per_iteration" not in row:
            lines.append(f"| {row['group']} | {row.get('error') or row.get('skipped')} | | |")
            continue
        med = row["ms_per_iteration"]
        for flavour, speedup in row["speedup"].items():
            lines.append(f"| {row['group']} | {med['stock']:.3f} | {flavour} {med[flavour]:.3f} "
                         f"| {speedup:.2f}× |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run_bundle.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True,
                        help="the unpacked bundle folder (run_bundle.py passes its own)")
    parser.add_argument("--out", type=Path, required=True, help="folder for results and logs")
    parser.add_argument("--cpu", action="store_true",
                        help="CPU mode: CPUDevice gtests and `caffe time` without -gpu")
    parser.add_argument("--gpu", type=int, default=0, help="GPU id (default %(default)s)")
    parser.add_argument("--gtest-filter", help="instead of the new layers' tests for the device")
    parser.add_argument("--only", nargs="*", default=[],
                        help="net groups to time (globs, e.g. 'mlp_1024x*'); default all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, help="MLP iterations per `caffe time` run "
                        "(default 50 on a GPU, 3 with --cpu)")
    parser.add_argument("--lm-iterations", type=int,
                        help="LSTM LM iterations per run (default 20 on a GPU, 1 with --cpu)")
    parser.add_argument("--budget", type=float, default=270,
                        help="seconds after which no further net group is timed")
    args = parser.parse_args(argv)
    if args.repeats < 1 or (args.iterations or 1) < 1 or (args.lm_iterations or 1) < 1:
        parser.error("--repeats, --iterations and --lm-iterations must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / "run.log")
    deadline = time.monotonic() + args.budget
    try:
        manifest = verify(args.bundle)
        log(f"bundle {args.bundle}: {len(manifest['files'])} files verified, "
            f"commit {manifest.get('git_commit')}, CUDA arch {manifest.get('cuda_arch')}")
        library_path = set_library_path(args.bundle, manifest.get("cuda", False))
        device = "CPU mode" if args.cpu else gpu_description()
        log(f"device: {device}; LD_LIBRARY_PATH={library_path}")
        gtests = run_gtests(args.bundle, args.out, args.gtest_filter or gtest_filter(args.cpu),
                            log, timeout=max(args.budget, 60))
        groups = net_groups(args.bundle, args.only)
        if not groups:
            raise RunError(f"no bundle nets match {args.only}")
        iterations = {"mlp": args.iterations or (3 if args.cpu else 50),
                      "lm": args.lm_iterations or (1 if args.cpu else 20)}
        benchmarks = run_benchmarks(args.bundle, groups, None if args.cpu else args.gpu,
                                    args.repeats, iterations, deadline, log)
    except RunError as err:
        log(f"bundle.run: error: {err}")
        return 1
    results = {"device": device, "host": platform.platform(), "manifest_commit":
               manifest.get("git_commit"), "gtests": gtests, "benchmarks": benchmarks}
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(markdown(results))
    failed = gtests["exit_code"] != 0 or any("error" in row for row in benchmarks)
    log(f"bundle.run: wrote {args.out / 'results.json'}; "
        f"{'FAILED' if failed else 'all passed'}")
    return 1 if failed else 0
