#!/usr/bin/env python3
"""Fill the result tables of the docs from the experiments' own summaries.

A page marks each generated table with

    <!-- table: mlp_rates/mlp_rates-i4690.md -->
    | ... the table ... |
    <!-- /table -->

where the path (relative to the page) names a summary that an experiment
script wrote from its run JSON files; the table lines of that summary (those
starting with '|') replace whatever stands between the markers. So no number
in those tables is copied by hand, and --check (run by the tests) fails when
a committed page differs from what its summaries give.

    scripts/results_tables.py [--check] [PAGE ...]   (default: the results page and README.md)
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from approx_dropout.prototxt.io import write_text_atomic

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "scripts/results/README.md", REPO / "README.md"]
BLOCK = re.compile(r"(<!-- table: (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


class TableError(Exception):
    pass


def table_of(summary: Path) -> str:
    try:
        lines = summary.read_text().splitlines()
    except OSError as err:
        raise TableError(f"{summary}: cannot read ({err.strerror})") from None
    table = [line for line in lines if line.startswith("|")]
    if not table:
        raise TableError(f"{summary}: holds no table")
    return "\n".join(table) + "\n"


def fill(page: Path) -> str:
    text = page.read_text()

    def replace(match: re.Match) -> str:
        summary = page.parent / match.group("path")
        return match.group(1) + table_of(summary) + match.group(4)

    return BLOCK.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", type=Path, help="default: %(default)s",
                        default=PAGES)
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a page is not up to date")
    args = parser.parse_args(argv)
    stale = []
    for page in args.pages:
        try:
            new = fill(page)
        except (OSError, TableError) as err:
            print(f"results_tables: error: {err}", file=sys.stderr)
            return 1
        if new == page.read_text():
            continue
        stale.append(page)
        if not args.check:
            write_text_atomic(page, new)
            print(f"results_tables: updated {page}")
    if args.check and stale:
        print("results_tables: out of date (run scripts/results_tables.py): "
              + ", ".join(str(p) for p in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
