"""How the benchmark scripts record what they measured, and where."""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from ..files import write_text_atomic


def command_line(script: str | os.PathLike[str], args: Sequence[str]) -> str:
    """The command as run from the checkout's root: the script's path from its
    scripts/ folder on (scripts/bench/bench_mlp.py), then the arguments. A
    script outside any scripts/ folder is named by its file name."""
    parts = Path(script).resolve().parts
    if "scripts" in parts[:-1]:
        start = len(parts) - 1 - parts[::-1].index("scripts")
        name = "/".join(parts[start:])
    else:
        name = Path(script).name
    return " ".join([name, *args])


def describe_machine(gpu: int | None = None) -> str:
    """One line naming the processor (or GPU id) a benchmark ran on."""
    model = platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    device = f"GPU {gpu}" if gpu is not None else "CPU mode"
    # A capped BLAS (e.g. two runs sharing the cores) is another machine as
    # far as times go: summaries compare times only within one description.
    threads = os.environ.get("OPENBLAS_NUM_THREADS")
    blas = f", OPENBLAS_NUM_THREADS={threads}" if threads else ""
    return f"{model}, {os.cpu_count()} cores{blas}, {device}"


def save(out: Path, stem: str, result: dict[str, Any], gpu: int | None,
         plot: Callable[[Path], None]) -> None:
    """Write out/stem.json (with the command line and machine) and out/stem.png."""
    out.mkdir(parents=True, exist_ok=True)
    record = {"command": command_line(sys.argv[0], sys.argv[1:]),
              "machine": describe_machine(gpu), **result}
    (out / f"{stem}.json").write_text(json.dumps(record, indent=1))
    plot(out / f"{stem}.png")
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.png')}")


def write_summary(json_path: Path, markdown: Callable[[dict[str, Any]], str],
                  tool: str) -> int:
    """A benchmark's --summarise: the markdown of an earlier JSON result,
    written beside it and printed; the exit status (1 on an unreadable or
    malformed file, with one line on stderr)."""
    try:
        text = markdown(json.loads(json_path.read_text()))
    except (OSError, ValueError, KeyError) as err:
        print(f"{tool}: error: {json_path}: {err}", file=sys.stderr)
        return 1
    write_text_atomic(json_path.with_suffix(".md"), text)
    print(text, end="")
    return 0
