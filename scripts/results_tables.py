#!/usr/bin/env python3
"""Fill the result tables of the docs from the experiments' own summaries.

A page marks each generated table with

    <!-- table: mlp_rates/mlp_rates-i4690.md -->
    | ... the table ... |
    <!-- /table -->

where the path (relative to the page) names a summary that an experiment
script wrote from its run JSON files; the table lines of that summary (those
starting with '|') replace whatever stands between the markers. After the
path, `table=N` picks the N-th table of a summary that has several, and
`rows=REGEX` keeps the header and only the rows that match (a regular
expression searched in the row). So no number in those tables is copied by
hand, and --check (run by the tests) fails when a committed page differs
from what its summaries give.

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
BLOCK = re.compile(r"(<!-- table: (?P<path>\S+)(?P<options>(?: [a-z]+=[^>]*?)*) -->\n)"
                   r"(?P<body>.*?)(<!-- /table -->)", re.S)
OPTION = re.compile(r" (table|rows)=(.*?)(?= (?:table|rows)=|$)")


class TableError(Exception):
    pass


def table_of(summary: Path, options: str = "") -> str:
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
    text = page.read_text()

    def replace(match: re.Match) -> str:
        summary = page.parent / match.group("path")
        return (match.group(1) + table_of(summary, match.group("options"))
                + match.group(5))

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
