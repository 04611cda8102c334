#!/usr/bin/env python3
"""The paper's MLP under `caffe time`: stock Dropout vs RDP vs TDP.

For each hidden size H, times 784-H-H-10 (batch 128, TRAIN phase) with stock
InnerProduct + ReLU + Dropout and with ApproxDropoutInnerProduct in each of
`--methods` (default: RDP in the strided layout with the default slices and
with the paper's one pattern per batch, RDP in the block layout without and
with pattern propagation, and TDP with the layer's defaults and the paper's
row-major tiles), running `caffe time` for the methods in turn, `--repeats`
times, and prints the median forward-backward time per iteration and the
ratio stock / approx. Writes JSON, a markdown table and a plot.

    scripts/bench/bench_mlp.py [--hidden 2048 4096] [--rate 0.7] [--repeats 5]
                         [--methods rdp rdp_s1 rdp_block rdp_prop tdp tdp_s1_rowmajor]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from approx_dropout import caffe_env
from approx_dropout.harness import caffe_time
from approx_dropout.harness import results as bench_results
from approx_dropout.methods import METHOD_HELP, method_label, method_settings
from approx_dropout.prototxt import nets
from approx_dropout.files import write_text_atomic

REPO = Path(__file__).resolve().parents[2]


def time_methods(methods: list[str], hidden: int, rate: float, repeats: int,
                 iterations: int, gpu: int | None) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for method in ["stock", *methods]:
            models[method] = Path(tmp) / f"mlp_{method}.prototxt"
            models[method].write_text(nets.mlp_for_method(method, (hidden, hidden),
                                                          (rate, rate)))
        timings = caffe_time.run_rotating(models, repeats, iterations, gpu)
    return {m: [t.iteration for t in runs] for m, runs in timings.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--rate", type=float, default=0.7)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=10,
                        help="iterations per `caffe time` run")
    parser.add_argument("--methods", nargs="+", metavar="METHOD",
                        default=["rdp", "rdp_s1", "rdp_block", "rdp_prop", "tdp",
                                 "tdp_s1_rowmajor"],
                        help="approximate methods timed against stock: " + METHOD_HELP)
    parser.add_argument("--gpu", type=int, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench")
    parser.add_argument("--summarise", type=Path, metavar="JSON",
                        help="time nothing; write the markdown table of an earlier "
                             "bench_mlp.json beside it")
    args = parser.parse_args(argv)
    if args.summarise:
        return bench_results.write_summary(args.summarise, markdown, "bench_mlp")
    if not 0 <= args.rate < 1 or args.repeats < 1 or args.iterations < 1:
        parser.error("--rate must be in [0, 1); --repeats and --iterations >= 1")
    for method in args.methods:
        try:
            if method_settings(method)[0] == "stock":
                raise ValueError("stock is always timed; name approximate methods only")
        except ValueError as err:
            parser.error(str(err))
    rows = []
    print(f"{'MLP':>16} {'p':>4} {'stock ms':>9}"
          + "".join(f" {m[:16]:>16} {'ratio':>6}" for m in args.methods), flush=True)
    for hidden in args.hidden:
        try:
            times = time_methods(args.methods, hidden, args.rate, args.repeats,
                                 args.iterations, args.gpu)
        except (caffe_time.CaffeTimeError, caffe_env.CaffeNotBuiltError) as err:
            print(f"bench_mlp: error: {err}", file=sys.stderr)
            return 1
        med = {m: statistics.median(t) for m, t in times.items()}
        if min(med.values()) <= 0:
            # caffe time's forward-backward total has millisecond resolution
            parser.error(f"784-{hidden}-{hidden}-10 runs too fast for caffe time's "
                         f"millisecond timer; raise --iterations")
        row = {"hidden": hidden, "rate": args.rate, "median_ms": med, "runs_ms": times,
               "ratio": {m: med["stock"] / med[m] for m in args.methods}}
        rows.append(row)
        print(f"{f'784-{hidden}-{hidden}-10':>16} {args.rate:>4.1f} {med['stock']:>9.2f}"
              + "".join(f" {med[m]:>16.2f} {row['ratio'][m]:>6.2f}" for m in args.methods),
              flush=True)
    result = {"repeats": args.repeats, "iterations": args.iterations,
              "methods": args.methods, "rows": rows}
    bench_results.save(args.out, "bench_mlp", result, args.gpu,
                       lambda path: plot(rows, args.methods, path))
    saved = json.loads((args.out / "bench_mlp.json").read_text())
    write_text_atomic(args.out / "bench_mlp.md", markdown(saved))
    return 0


def markdown(result: dict) -> str:
    """The table of a bench_mlp.json: median ms and stock / method per MLP."""
    methods = result["methods"]
    lines = [f"Command: `{result['command']}`", "", f"Machine: {result['machine']}", "",
             f"`caffe time`, TRAIN phase, {result['iterations']} iterations per run, "
             f"medians of {result['repeats']} rotating repeats; ratio = stock ms / method ms.",
             "",
             "| MLP | p | stock ms | " + " | ".join(method_label(m) for m in methods) + " |",
             "|---|---|---|" + "---|" * len(methods)]
    for row in result["rows"]:
        h, med = row["hidden"], row["median_ms"]
        cells = [f"{med[m]:.1f} ms, {row['ratio'][m]:.2f}×" for m in methods]
        lines.append(f"| 784-{h}-{h}-10 | {row['rate']:g} | {med['stock']:.1f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], methods: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.8))
    labels = [f"784-{r['hidden']}-{r['hidden']}-10" for r in rows]
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        ax.bar([i - 0.4 + (j + 0.5) * width for i in range(len(rows))],
               [r["ratio"][method] for r in rows], width, label=method_label(method))
    ax.axhline(1, color="k", lw=0.8)
    ax.set_xticks(list(range(len(rows))), labels)
    ax.set_ylabel("speedup per iteration over stock Dropout")
    ax.set_title(f"caffe time, dropout {rows[0]['rate']:g}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
