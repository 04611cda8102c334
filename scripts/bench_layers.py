#!/usr/bin/env python3
"""Side-by-side timing of one fully connected layer with dropout.

Stock Caffe (InnerProduct + Dropout) against ApproxDropoutInnerProduct
(ROW/OUTPUT, ROW/INPUT, TILE), forward + backward, batch 128, K = N = size,
in one process: each repeat times every variant in turn (rotating the order),
and the table shows medians over the repeats and the ratio stock / approx.
ROW/INPUT is compared with Dropout -> InnerProduct, the others with
InnerProduct -> Dropout. Writes a JSON file and a matplotlib plot.

    scripts/bench_layers.py [--sizes 1024 2048 4096] [--rates 0.3 0.5 0.7]
                            [--repeats 5] [--out build/bench]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))

from approx_dropout import bench_results, caffe_env, nets  # noqa: E402

VARIANTS = {  # approx variant -> its stock counterpart
    "row_output": "stock_output",
    "row_input": "stock_input",
    "tile": "stock_output",
}


def load(caffe, text: str):
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
        f.write(text)
    try:
        return caffe.Net(f.name, caffe.TRAIN)
    finally:
        os.unlink(f.name)


def seconds_per_iteration(net, iterations: int) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        net.forward()
        net.backward()
    return (time.perf_counter() - start) / iterations


def bench(caffe, size: int, rate: float, repeats: int, batch: int) -> dict[str, float]:
    import numpy as np
    names = ["stock_output", "stock_input", *VARIANTS]
    rng = np.random.default_rng(0)
    net_of = {}
    for name in names:
        net = load(caffe, nets.layer_pair(name, size, rate, batch))
        net.blobs["data"].data[...] = rng.uniform(0, 1, net.blobs["data"].data.shape)
        net.blobs["fc"].diff[...] = rng.normal(0, 1, net.blobs["fc"].diff.shape)
        seconds_per_iteration(net, 1)  # warm-up: buffers, BLAS threads
        net_of[name] = net
    # About 1 s of work and at least 8 iterations per measurement: each
    # iteration samples a new pattern, and the measurement must average over
    # the distribution of dp, not catch a few lucky or unlucky draws.
    probe = seconds_per_iteration(net_of["stock_output"], 1)
    iterations = max(8, int(1.0 / max(probe, 1e-6)))
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            times[name].append(seconds_per_iteration(net_of[name], iterations))
    return {n: statistics.median(t) for n, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--gpu", type=int, default=None, help="GPU id (default: CPU)")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench")
    args = parser.parse_args(argv)
    if args.repeats < 1 or any(not 0 <= r < 1 for r in args.rates):
        parser.error("--repeats must be >= 1 and every rate in [0, 1)")
    caffe = caffe_env.import_caffe()
    if args.gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(args.gpu)
        caffe.set_mode_gpu()
    rows = []
    header = (f"{'size':>6} {'p':>4} {'stock ms':>9} {'ROW/OUT ms':>10} {'ratio':>6}"
              f" {'ROW/IN ms':>10} {'ratio':>6} {'TILE ms':>8} {'ratio':>6} {'limit':>6}")
    print(header, flush=True)
    for size in args.sizes:
        for rate in args.rates:
            med = bench(caffe, size, rate, args.repeats, args.batch)
            ratio = {v: med[s] / med[v] for v, s in VARIANTS.items()}
            rows.append({"size": size, "rate": rate, "median_s": med, "ratio": ratio})
            print(f"{size:>6} {rate:>4.1f} {med['stock_output'] * 1e3:>9.2f} "
                  f"{med['row_output'] * 1e3:>10.2f} {ratio['row_output']:>6.2f} "
                  f"{med['row_input'] * 1e3:>10.2f} {ratio['row_input']:>6.2f} "
                  f"{med['tile'] * 1e3:>8.2f} {ratio['tile']:>6.2f} "
                  f"{1 / (1 - rate):>6.2f}", flush=True)
    bench_results.save(args.out, "bench_layers",
                       {"batch": args.batch, "repeats": args.repeats, "rows": rows},
                       args.gpu, lambda path: plot(rows, path))
    return 0


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sizes = sorted({r["size"] for r in rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.5 * len(sizes), 3.8),
                             squeeze=False, sharey=True)
    for ax, size in zip(axes[0], sizes):
        sub = [r for r in rows if r["size"] == size]
        rates = [r["rate"] for r in sub]
        for variant, label in (("row_output", "ROW/OUTPUT"), ("row_input", "ROW/INPUT"),
                               ("tile", "TILE")):
            ax.plot(rates, [r["ratio"][variant] for r in sub], "o-", label=label)
        ax.plot(rates, [1 / (1 - p) for p in rates], "k--", label="FLOP limit 1/(1-p)")
        ax.set_title(f"{size} x {size}, forward + backward")
        ax.set_xlabel("dropout rate p")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("speedup over InnerProduct + Dropout")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
