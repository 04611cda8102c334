#!/usr/bin/env python3
"""Side-by-side timing of one fully connected layer with dropout.

Stock Caffe (InnerProduct + Dropout) against ApproxDropoutInnerProduct
(ROW/OUTPUT, ROW/INPUT in the layer's default layout and in each of the
STRIDED and BLOCK layouts, and TILE), forward + backward, batch 128,
K = N = size, in one process: each repeat times every variant in turn
(rotating the order), and the table shows medians over the repeats and the
ratio stock / approx. ROW/INPUT is compared with Dropout -> InnerProduct,
the others with InnerProduct -> Dropout.

Then the consumer of a propagated pattern: in two-layer nets (nets.layer_pair
"pair_stock" and "pair_propagated") the second layer alone, forward +
backward, after a full pass that samples this iteration's patterns: stock
fc2 + its Dropout against fc2 taking fc1's pattern (ROW, BLOCK), which skips
the inputs fc1 dropped ("consumer" in the results). Writes JSON, a markdown
table and a matplotlib plot.

    scripts/bench/bench_layers.py [--sizes 1024 2048 4096] [--rates 0.3 0.5 0.7]
                            [--repeats 5] [--variants ...] [--out build/bench]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from approx_dropout import caffe_env
from approx_dropout.harness import results as bench_results
from approx_dropout.prototxt import nets
from approx_dropout.files import write_text_atomic

REPO = Path(__file__).resolve().parents[2]

VARIANTS = {  # approx variant -> its stock counterpart
    "row_output": "stock_output",
    "row_output_strided": "stock_output",
    "row_output_block": "stock_output",
    "row_input": "stock_input",
    "row_input_strided": "stock_input",
    "row_input_block": "stock_input",
    "tile": "stock_output",
}
LABELS = {"row_output": "ROW/OUTPUT", "row_output_strided": "ROW/OUTPUT strided",
          "row_output_block": "ROW/OUTPUT block", "row_input": "ROW/INPUT",
          "row_input_strided": "ROW/INPUT strided", "row_input_block": "ROW/INPUT block",
          "tile": "TILE"}


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


def _iterations_for(probe_seconds: float) -> int:
    # About 1 s of work and at least 8 iterations per measurement: each
    # iteration samples a new pattern, and the measurement must average over
    # the distribution of dp, not catch a few lucky or unlucky draws.
    return max(8, int(1.0 / max(probe_seconds, 1e-6)))


def _rotating(names: list[str], repeats: int,
              measure: Callable[[str], float]) -> dict[str, float]:
    """Median over repeats of measure(name), the order rotating each repeat."""
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(measure(name))
    return {n: statistics.median(t) for n, t in times.items()}


def _fill_inputs(net, top: str, rng) -> None:
    net.blobs["data"].data[...] = rng.uniform(0, 1, net.blobs["data"].data.shape)
    net.blobs[top].diff[...] = rng.normal(0, 1, net.blobs[top].diff.shape)


def bench(caffe, size: int, rate: float, repeats: int, batch: int,
          variants: list[str]) -> dict[str, float]:
    import numpy as np
    stock = sorted({VARIANTS[v] for v in variants}, key=list(nets.STOCK_VARIANTS).index)
    names = [*stock, *variants]
    rng = np.random.default_rng(0)
    net_of = {}
    for name in names:
        net = load(caffe, nets.layer_pair(name, size, rate, batch))
        _fill_inputs(net, "fc", rng)
        seconds_per_iteration(net, 1)  # warm-up: buffers, BLAS threads
        net_of[name] = net
    iterations = _iterations_for(seconds_per_iteration(net_of[stock[0]], 1))
    return _rotating(names, repeats,
                     lambda name: seconds_per_iteration(net_of[name], iterations))


class ConsumerTimer:
    """Time some layers of a net alone, forward + backward, each iteration after
    an untimed full pass (which samples the iteration's patterns)."""

    def __init__(self, net, layers: list[str]):
        names = list(net._layer_names)
        self.net = net
        self.indices = [names.index(layer) for layer in layers]

    def seconds_per_iteration(self, iterations: int) -> float:
        total = 0.0
        for _ in range(iterations):
            self.net.forward()
            self.net.backward()
            start = time.perf_counter()
            for i in self.indices:
                self.net._forward(i, i)
            for i in reversed(self.indices):
                self.net._backward(i, i)
            total += time.perf_counter() - start
        return total / iterations


def bench_consumer(caffe, size: int, rate: float, repeats: int,
                   batch: int) -> dict[str, float]:
    """Seconds per iteration of fc2 + drop2 (stock) and of fc2 taking fc1's
    pattern, and stock / propagated."""
    import numpy as np
    rng = np.random.default_rng(1)
    timers = {}
    for variant, layers in (("pair_stock", ["fc2", "drop2"]), ("pair_propagated", ["fc2"])):
        net = load(caffe, nets.layer_pair(variant, size, rate, batch))
        _fill_inputs(net, "fc2", rng)
        timers[variant] = ConsumerTimer(net, layers)
        timers[variant].seconds_per_iteration(1)  # warm-up
    # each timed iteration also runs an untimed full pass: about 1 s of those
    probe = seconds_per_iteration(timers["pair_stock"].net, 1)
    iterations = _iterations_for(probe)
    med = _rotating(list(timers), repeats,
                    lambda name: timers[name].seconds_per_iteration(iterations))
    return {"stock_s": med["pair_stock"], "propagated_s": med["pair_propagated"],
            "ratio": med["pair_stock"] / med["pair_propagated"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                        default=list(VARIANTS), metavar="VARIANT",
                        help="approximate layers timed (default: all of "
                             f"{', '.join(VARIANTS)}); row_output / row_input use the "
                             "layer's default layout")
    parser.add_argument("--no-consumer", action="store_true",
                        help="skip the propagated-pattern consumer measurement")
    parser.add_argument("--gpu", type=int, default=None, help="GPU id (default: CPU)")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench")
    args = parser.parse_args(argv)
    if args.repeats < 1 or any(not 0 <= r < 1 for r in args.rates):
        parser.error("--repeats must be >= 1 and every rate in [0, 1)")
    variants = list(dict.fromkeys(args.variants))
    caffe = caffe_env.import_caffe()
    if args.gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(args.gpu)
        caffe.set_mode_gpu()
    rows = []
    header = (f"{'size':>6} {'p':>4} {'stock ms':>9}"
              + "".join(f" {LABELS[v][:18]:>18} {'ratio':>6}" for v in variants)
              + ("" if args.no_consumer else f" {'consumer':>8}") + f" {'limit':>6}")
    print(header, flush=True)
    for size in args.sizes:
        for rate in args.rates:
            med = bench(caffe, size, rate, args.repeats, args.batch, variants)
            ratio = {v: med[VARIANTS[v]] / med[v] for v in variants}
            row: dict[str, Any] = {"size": size, "rate": rate, "median_s": med,
                                   "ratio": ratio}
            if not args.no_consumer:
                row["consumer"] = bench_consumer(caffe, size, rate, args.repeats, args.batch)
            rows.append(row)
            stock_ms = med.get("stock_output", med.get("stock_input", 0.0)) * 1e3
            print(f"{size:>6} {rate:>4.1f} {stock_ms:>9.2f}"
                  + "".join(f" {med[v] * 1e3:>18.2f} {ratio[v]:>6.2f}" for v in variants)
                  + ("" if args.no_consumer else f" {row['consumer']['ratio']:>8.2f}")
                  + f" {1 / (1 - rate):>6.2f}", flush=True)
    result = {"batch": args.batch, "repeats": args.repeats, "variants": variants, "rows": rows}
    bench_results.save(args.out, "bench_layers", result, args.gpu,
                       lambda path: plot(rows, variants, path))
    saved = json.loads((args.out / "bench_layers.json").read_text())
    write_text_atomic(args.out / "bench_layers.md", markdown(saved))
    print(f"wrote {args.out / 'bench_layers.md'}")
    return 0


def markdown(result: dict) -> str:
    """The table of a bench_layers.json: stock ms, each variant's ms and
    stock / variant, and the consumer's stock / propagated."""
    variants = result.get("variants") or [v for v in VARIANTS if v in result["rows"][0]["ratio"]]
    consumer = any("consumer" in row for row in result["rows"])
    lines = [f"Command: `{result['command']}`", "", f"Machine: {result['machine']}", "",
             f"Forward + backward, batch {result['batch']}, K = N = size, medians of "
             f"{result['repeats']} rotating repeats; ratio = stock ms / variant ms "
             f"(ROW/INPUT against Dropout -> InnerProduct, the others against "
             f"InnerProduct -> Dropout)"
             + ("; consumer: the second of two layers alone, stock InnerProduct + "
                "Dropout / ApproxDropoutInnerProduct (ROW, BLOCK) skipping the inputs "
                "the first dropped" if consumer else "") + ".", "",
             "| size | p | stock ms | " + " | ".join(LABELS[v] for v in variants)
             + (" | consumer (fc2) | " if consumer else " | ") + "limit |",
             "|---|---|---|" + "---|" * (len(variants) + consumer + 1)]
    for row in result["rows"]:
        med = row["median_s"]
        stock = med.get("stock_output", med.get("stock_input", 0.0))
        cells = [f"{med[v] * 1e3:.2f} ms, {row['ratio'][v]:.2f}×" for v in variants]
        if consumer:
            c = row.get("consumer")
            cells.append("—" if c is None else
                         f"{c['stock_s'] * 1e3:.2f} → {c['propagated_s'] * 1e3:.2f} ms, "
                         f"{c['ratio']:.2f}×")
        lines.append(f"| {row['size']} | {row['rate']:g} | {stock * 1e3:.2f} | "
                     + " | ".join(cells) + f" | {1 / (1 - row['rate']):.2f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], variants: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sizes = sorted({r["size"] for r in rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.5 * len(sizes), 3.8),
                             squeeze=False, sharey=True)
    for ax, size in zip(axes[0], sizes):
        sub = [r for r in rows if r["size"] == size]
        rates = [r["rate"] for r in sub]
        for variant in variants:
            ax.plot(rates, [r["ratio"][variant] for r in sub], "o-", label=LABELS[variant])
        if all("consumer" in r for r in sub):
            ax.plot(rates, [r["consumer"]["ratio"] for r in sub], "s:",
                    label="consumer fc2, propagated")
        ax.plot(rates, [1 / (1 - p) for p in rates], "k--", label="FLOP limit 1/(1-p)")
        ax.set_title(f"{size} x {size}, forward + backward")
        ax.set_xlabel("dropout rate p")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("speedup over InnerProduct + Dropout")
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
