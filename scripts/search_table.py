#!/usr/bin/env python3
"""The pattern-distribution search, both methods, over a grid of p and N.

Prints a markdown table (the one in the README) of what each distribution
does to training: the unit dropout rate it reaches, the standard deviation
of one iteration's dropped fraction, how many (dp, b) sub-models it samples
(and the effective number, exp entropy), P(dp = 1), and the search's
warnings.

    scripts/search_table.py [--rates 0.3 0.5 0.7] [--max-dp 4 16 64 2048] [--json OUT]

(The table that a gtest compares with the C++ DefaultPatternDistribution is
scripts/regenerate.py table's.)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from approx_dropout.patterns.search import METHODS, SearchError, search


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--max-dp", type=int, nargs="+", default=[4, 16, 64, 2048])
    parser.add_argument("--json", type=Path, help="also write every result here")
    args = parser.parse_args()
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
