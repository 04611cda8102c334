#!/usr/bin/env python3
"""The pattern-distribution search, both methods, over a grid of p and N.

Prints a markdown table (the one in the README) of what each distribution
does to training: the unit dropout rate it reaches, the standard deviation
of one iteration's dropped fraction, how many (dp, b) sub-models it samples
(and the effective number, exp entropy), P(dp = 1), and the search's
warnings.

    scripts/search_table.py [--rates 0.3 0.5 0.7] [--max-dp 4 16 64 2048] [--json OUT]
    scripts/search_table.py --default-table    # rewrite the gtest's table (see below)

--default-table regenerates layers/src/caffe/test/test_data/
approx_dropout_default_distributions.txt, bounded_search over the (p, N)
grid that a gtest compares with the C++ DefaultPatternDistribution (same as
python -m approx_dropout.patterns.search --table > that file); rebuild
caffe_tests afterwards, CMake embeds the table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from approx_dropout.patterns.search import (
    METHODS, SearchError, default_distribution_table, search)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TABLE = REPO / "layers/src/caffe/test/test_data/approx_dropout_default_distributions.txt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--max-dp", type=int, nargs="+", default=[4, 16, 64, 2048])
    parser.add_argument("--json", type=Path, help="also write every result here")
    parser.add_argument("--default-table", action="store_true",
                        help=f"only rewrite {DEFAULT_TABLE.relative_to(REPO)} (the C++ "
                             f"default's reference table)")
    args = parser.parse_args()
    if args.default_table:
        DEFAULT_TABLE.write_text(default_distribution_table())
        print(f"wrote {DEFAULT_TABLE.relative_to(REPO)}")
        return 0
    print("| method | N | p | rate | spread | sub-models (effective) | P(dp=1) | warnings |")
    print("|---|---|---|---|---|---|---|---|")
    records = []
    for method in METHODS:
        for n in args.max_dp:
            for p in args.rates:
                try:
                    res = search(p, n, method)
                except SearchError as e:
                    print(f"| {method} | {n} | {p:g} | — | — | — | — | error: {e} |")
                    continue
                tags = ", ".join(w.split(":")[0] for w in res.warnings) or "—"
                print(f"| {method} | {n} | {p:g} | {res.rate:.4f} | {res.spread:.3f} | "
                      f"{res.sub_models} ({res.effective_sub_models:.1f}) | "
                      f"{res.no_dropout:.3f} | {tags} |")
                records.append({k: v for k, v in res.as_dict().items()
                                if k != "distribution"})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
