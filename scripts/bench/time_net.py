#!/usr/bin/env python3
"""Run Caffe's `caffe time` on one net and print its per-layer table.

The forward and backward milliseconds of each layer and the pass totals, as
approx_dropout.harness.caffe_time parses them from the tool's glog output
(the benchmarks time several nets the same way, in turn).

    scripts/bench/time_net.py NET.prototxt [--iterations 10] [--phase TRAIN|TEST] [--gpu 0]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from approx_dropout import caffe_env
from approx_dropout.harness import caffe_time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="net prototxt")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--phase", choices=["TRAIN", "TEST"], default="TRAIN")
    parser.add_argument("--gpu", type=int, default=None, help="GPU id (default: CPU)")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")
    try:
        timing = caffe_time.run(args.model, args.iterations, args.phase, args.gpu)
    except (caffe_time.CaffeTimeError, caffe_env.CaffeNotBuiltError) as err:
        print(f"time_net: error: {err}", file=sys.stderr)
        return 1
    print(f"caffe time: {args.model}, {args.iterations} iterations, {args.phase}, "
          f"{'GPU %d' % args.gpu if args.gpu is not None else 'CPU'}")
    print(timing.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
