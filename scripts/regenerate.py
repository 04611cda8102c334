#!/usr/bin/env python3
"""Rewrite the checkout's generated files, or check that they are current.

    scripts/regenerate.py nets    [--check] [--root DIR]
    scripts/regenerate.py table   [--check] [--root DIR]
    scripts/regenerate.py results [--check] [--root DIR] [PAGE ...]

nets: the committed nets, prototxt/<name> for every name of
approx_dropout.prototxt.nets.COMMITTED, each nets.committed_text(name)
(building a net needs the Caffe build's caffe_pb2).

table: layers/src/caffe/test/test_data/approx_dropout_default_distributions.txt,
bounded_search over the (p, N) grid on which a gtest compares the C++
DefaultPatternDistribution (CMake embeds the file: rebuild caffe_tests
after a change). A file is current when its comment lines are the
generator's and its numbers match within 1e-9 (same (p, N), same support):
exp's last bit differs between CPUs, so a file that differs from this
machine's output only there is left as it is.

results: the result tables of scripts/results/README.md and README.md (or
of the PAGEs named) are the experiments' own summaries. A page marks each
generated table with

    <!-- table: mlp_rates/mlp_rates-i4690.md -->
    | ... the table ... |
    <!-- /table -->

where the path (relative to the page) names a summary that an experiment
script wrote from its run JSON files; the table lines of that summary (those
starting with '|') replace whatever stands between the markers. After the
path, `table=N` picks the N-th table of a summary that has several, and
`rows=REGEX` keeps the header and only the rows that match (a regular
expression searched in the row). So no number in those tables is copied by
hand.

Without --check, the files that are out of date are rewritten (atomically)
and named. With --check nothing is written: one line per out-of-date file
on stderr and exit status 1 (the tests run the checks). --root DIR works on
the checkout (or copy) at DIR instead of the one holding this script.
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from approx_dropout import caffe_env
from approx_dropout.files import FileWriteError, write_text_atomic
from approx_dropout.patterns.search import (compare_distribution_tables,
                                            default_distribution_table)
from approx_dropout.prototxt import nets
from approx_dropout.prototxt.io import PrototxtError

PROG = "regenerate.py"
REPO = Path(__file__).resolve().parents[1]
NETS_DIR = Path("prototxt")
TABLE = Path("layers/src/caffe/test/test_data/approx_dropout_default_distributions.txt")
PAGES = (Path("scripts/results/README.md"), Path("README.md"))
TABLE_TOLERANCE = 1e-9   # as the gtest compares the C++ default with the table

BLOCK = re.compile(r"(<!-- table: (?P<path>\S+)(?P<options>(?: [a-z]+=[^>]*?)*) -->\n)"
                   r"(?P<body>.*?)(<!-- /table -->)", re.S)
OPTION = re.compile(r" (table|rows)=(.*?)(?= (?:table|rows)=|$)")


class RegenerateError(Exception):
    """A file that cannot be generated (one line)."""


class TableError(RegenerateError):
    """A results page whose marker names a summary or a table that is not there."""


@dataclass
class Generated:
    path: Path          # where the file lives
    text: str           # what it must hold
    current: bool       # it holds that already (or the equivalent, for the table)


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


# ---- nets -----------------------------------------------------------------------

def generate_nets(root: Path) -> list[Generated]:
    """prototxt/<name> of every committed net, from the generator."""
    out = []
    for name in nets.COMMITTED:
        path = root / NETS_DIR / name
        text = nets.committed_text(name)
        out.append(Generated(path, text, _read(path) == text))
    return out


# ---- table ----------------------------------------------------------------------

def table_is_current(old: str, new: str) -> bool:
    """The same comment lines, and the same numbers within TABLE_TOLERANCE."""
    def comments(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("#")]

    if comments(old) != comments(new):
        return False
    try:
        return not compare_distribution_tables(new, old, TABLE_TOLERANCE)
    except ValueError:   # a line the parser cannot read
        return False


def generate_table(root: Path) -> list[Generated]:
    """The gtest's table of bounded_search over the (p, N) grid."""
    path = root / TABLE
    text = default_distribution_table()
    old = _read(path)
    return [Generated(path, text, old is not None and table_is_current(old, text))]


# ---- results --------------------------------------------------------------------

def table_of(summary: Path, options: str = "") -> str:
    """The table lines of a summary, picked by the marker's options (table=, rows=)."""
    try:
        lines = summary.read_text().splitlines()
    except OSError as err:
        raise TableError(f"{summary}: cannot read ({err.strerror})") from None
    tables: list[list[str]] = []
    for previous, line in zip([""] + lines, lines):
        if line.startswith("|"):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append(line)
    settings = dict(OPTION.findall(options))
    number = int(settings.get("table", "1"))
    if not 1 <= number <= len(tables):
        raise TableError(f"{summary}: has {len(tables)} table(s), not a table {number}")
    table = tables[number - 1]
    if "rows" in settings:
        keep = re.compile(settings["rows"])
        table = table[:2] + [row for row in table[2:] if keep.search(row)]
    return "\n".join(table) + "\n"


def fill(page: Path) -> str:
    """The page's text with every marked table refilled from its summary."""
    text = page.read_text()

    def replace(match: re.Match) -> str:
        summary = page.parent / match.group("path")
        return (match.group(1) + table_of(summary, match.group("options"))
                + match.group(5))

    return BLOCK.sub(replace, text)


def generate_results(pages: Sequence[Path]) -> list[Generated]:
    """Each page with its generated tables filled in."""
    out = []
    for page in pages:
        try:
            text = fill(page)
            current = text == page.read_text()
        except OSError as err:
            raise RegenerateError(f"{page}: cannot read ({err.strerror})") from None
        out.append(Generated(page, text, current))
    return out


# ---- the command ----------------------------------------------------------------

def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def regenerate(job: str, files: Sequence[Generated], root: Path, check: bool) -> int:
    """Write the files that are out of date, or (check) name them; the exit status."""
    stale = [f for f in files if not f.current]
    if check:
        for f in stale:
            print(f"{_shown(f.path, root)}: out of date (scripts/regenerate.py {job} "
                  f"rewrites it)", file=sys.stderr)
        return 1 if stale else 0
    for f in stale:
        f.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(f.path, f.text)
        print(f"{PROG} {job}: wrote {_shown(f.path, root)}")
    if not stale:
        print(f"{PROG} {job}: {len(files)} file(s) up to date")
    return 0


JOBS: dict[str, tuple[str, Callable[[argparse.Namespace], list[Generated]]]] = {
    "nets": ("the committed nets, prototxt/*.prototxt (needs the Caffe build)",
             lambda args: generate_nets(args.root)),
    "table": ("the C++ default's reference table, test_data/"
              "approx_dropout_default_distributions.txt",
              lambda args: generate_table(args.root)),
    "results": ("the result tables of scripts/results/README.md and README.md, from "
                "the committed summaries",
                lambda args: generate_results(args.pages or [args.root / p for p in PAGES])),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--check", action="store_true",
                        help="write nothing; name each out-of-date file and exit 1 if any")
    common.add_argument("--root", type=Path, default=REPO,
                        help="the checkout to work on (default: %(default)s)")
    sub = parser.add_subparsers(dest="job", required=True, metavar="{nets,table,results}")
    for job, (what, _) in JOBS.items():
        p = sub.add_parser(job, parents=[common], help=what, description=f"Rewrite {what}.")
        if job == "results":
            p.add_argument("pages", nargs="*", type=Path, metavar="PAGE",
                           help="pages to fill (default: scripts/results/README.md and "
                                "README.md under --root)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    generate = JOBS[args.job][1]
    try:
        files = generate(args)
        return regenerate(args.job, files, args.root, args.check)
    except (RegenerateError, PrototxtError, FileWriteError,
            caffe_env.CaffeNotBuiltError) as err:
        print(f"{PROG} {args.job}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
