#!/usr/bin/env python3
"""One pattern per batch or two? CaffeNet's fc6 (9216 -> 4096) timed by batch.

At p = 0.5 the bounded distribution is dp = 2 only, so two batch slices
(b and b + 1) together read all of W where one slice reads half of it, for
the same FLOPs. This times `caffe time` (TRAIN, forward + backward) of a net
Input (batch x 9216) -> fc6 -> ReLU -> loss with fc6 as stock InnerProduct +
Dropout, and as ApproxDropoutInnerProduct (ROW, BLOCK) with batch_slices 1
and 2, at each batch size, rotating the order each repeat; medians, and the
ratio stock / approx. Writes JSON, a markdown table and a plot.

    scripts/bench/bench_fc6_slices.py [--batches 16 32 64 256] [--rate 0.5]
        [--repeats 5] [--iterations 10] [--out scripts/results/fc6_slices]
    scripts/bench/bench_fc6_slices.py --summarise scripts/results/fc6_slices/fc6_slices.json
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from approx_dropout.harness import caffe_time
from approx_dropout.harness import results as bench_results

K, N = 9216, 4096
SLICES = (1, 2)


def net_text(batch: int, rate: float, slices: int | None) -> str:
    """fc6 of CaffeNet (CaffeNet's fillers); slices None: stock + Dropout."""
    head = (f'name: "fc6" layer {{ name: "data" type: "Input" top: "data" '
            f'input_param {{ shape {{ dim: {batch} dim: {K} }} }} }}\n')
    inner = (f'inner_product_param {{ num_output: {N} weight_filler {{ type: "gaussian" '
             f'std: 0.005 }} bias_filler {{ type: "constant" value: 0.1 }} }}')
    if slices is None:
        fc6 = (f'layer {{ name: "fc6" type: "InnerProduct" bottom: "data" top: "fc6" {inner} }}\n'
               'layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }\n'
               f'layer {{ name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" '
               f'dropout_param {{ dropout_ratio: {rate} }} }}\n')
    else:
        fc6 = (f'layer {{ name: "fc6" type: "ApproxDropoutInnerProduct" bottom: "data" '
               f'top: "fc6" {inner} approx_dropout_param {{ dropout_ratio: {rate} '
               f'batch_slices: {slices} }} }}\n'
               'layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }\n')
    loss = ('layer { name: "loss" type: "Reduction" bottom: "fc6" top: "loss" '
            'loss_weight: 1 reduction_param { operation: SUMSQ } }\n')
    return head + fc6 + loss


def measure(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="fc6-slices-") as tmp:
        for batch in args.batches:
            models = {}
            for slices in (None, *SLICES):
                name = "stock" if slices is None else f"slices_{slices}"
                path = Path(tmp) / f"{name}_{batch}.prototxt"
                path.write_text(net_text(batch, args.rate, slices))
                models[name] = path
            timings = caffe_time.run_rotating(models, args.repeats, args.iterations)
            ms = {name: statistics.median(t.iteration for t in runs)
                  for name, runs in timings.items()}
            fc6 = {name: statistics.median(t.forward["fc6"] + t.backward["fc6"] for t in runs)
                   for name, runs in timings.items()}
            rows.append({"batch": batch, "ms": ms, "fc6_ms": fc6,
                         "runs": {name: [t.iteration for t in runs]
                                  for name, runs in timings.items()}})
            print(f"batch {batch}: " + ", ".join(f"{n} {v:.1f} ms" for n, v in ms.items()),
                  flush=True)
    return {"rate": args.rate, "repeats": args.repeats, "iterations": args.iterations,
            "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Command: `{result['command']}`", "", f"Machine: {result['machine']}", "",
             f"`caffe time`, TRAIN, forward + backward of Input (batch x {K}) -> fc6 "
             f"({K} -> {N}) -> ReLU -> loss at p = {result['rate']}; medians of "
             f"{result['repeats']} rotating repeats of {result['iterations']} iterations; "
             f"ratio = stock ms / approx ms. Approximate fc6: ROW, BLOCK.", "",
             "| batch | stock ms | 1 slice (paper) | 2 slices | 2 slices / 1 slice |",
             "|---|---|---|---|---|"]
    for row in result["rows"]:
        ms = row["ms"]
        cells = [f"{ms[f'slices_{s}']:.1f} ms, {ms['stock'] / ms[f'slices_{s}']:.2f}×"
                 for s in SLICES]
        lines.append(f"| {row['batch']} | {ms['stock']:.1f} | {cells[0]} | {cells[1]} | "
                     f"{ms['slices_2'] / ms['slices_1']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = [row["batch"] for row in result["rows"]]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for s in SLICES:
        ax.plot(batches, [row["ms"]["stock"] / row["ms"][f"slices_{s}"]
                          for row in result["rows"]], marker="o",
                label=f"{s} slice{'s' if s > 1 else ''}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch")
    ax.set_ylabel("speed-up over stock")
    ax.set_title(f"fc6 {K} -> {N}, p = {result['rate']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64, 256])
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("scripts/results/fc6_slices"))
    parser.add_argument("--summarise", type=Path, metavar="JSON",
                        help="only write the markdown of an earlier result")
    args = parser.parse_args(argv)
    if args.summarise:
        return bench_results.write_summary(args.summarise, markdown, "bench_fc6_slices")
    result = measure(args)
    bench_results.save(args.out, "fc6_slices", result, None, lambda path: plot(result, path))
    json_path = args.out / "fc6_slices.json"
    return bench_results.write_summary(json_path, markdown, "bench_fc6_slices")


if __name__ == "__main__":
    raise SystemExit(main())
