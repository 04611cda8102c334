#!/usr/bin/env python3
"""The LSTM language model under `caffe time`: stock vs the approximate LSTMs.

For each dropout rate p, times the word-level LM (default 2 x 1500, batch 20,
35 steps, vocabulary 10 000; TRAIN phase) with stock Embed -> Dropout ->
LSTM -> Dropout -> LSTM -> Dropout -> InnerProduct and with
ApproxDropoutLSTM / ApproxDropoutInnerProduct (ROW and TILE), running
`caffe time` for the methods in turn, `--repeats` times, and prints the
median time per iteration, the ratio stock / approx and the FLOP bound
beside it. With input dropout only (row, tile) the input-to-gates products
and the decoder shrink (by 1 - p) and the recurrent products do not, so the
bound is (R + D) / (R + (1 - p) D) with R the recurrent and D the reducible
multiply-add FLOPs; row_rec and tile_rec also drop h_{t-1} on the recurrent
path at the same rate (recurrent_dropout_ratio, a pattern per time step),
so their bound is 1 / (1 - p). The input-only bound assumes every product
runs at one speed; on a CPU the recurrent products (batch-sized, 20 rows)
run several times slower per FLOP than the 700-row input product. So the
script also times the stock input-to-gates product alone (an InnerProduct
of the LSTM's x_transform shape) and reports a time bound: stock / (stock -
p x the stock time of the reducible layers: input transforms, decoder,
Dropout). A second table splits the time by layer at the last rate, to show
where the rest goes. Writes JSON and a plot.

    scripts/bench/bench_lstm.py [--rates 0.3 0.5 0.7] [--hidden 1500] [--repeats 5]
                          [--methods stock row tile row_rec tile_rec]

The methods are approx_dropout.methods' LSTM methods (LM_METHODS).
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
from approx_dropout.methods import (LM_METHOD_HELP, LM_METHODS, lm_method_label,
                                    lm_method_settings)
from approx_dropout.prototxt import nets
from approx_dropout.files import write_text_atomic

REPO = Path(__file__).resolve().parents[2]

# the methods timed unless --methods says otherwise
DEFAULT_METHODS = ["stock", "row", "tile", "row_rec", "tile_rec"]


def label(method: str) -> str:
    """A method's head in the tables and the plot (its short label)."""
    return lm_method_label(method, short=True)


def method_net(method: str, rate: float, shape: dict[str, int]) -> str:
    """The LM of a method at dropout rate `rate`; shape: nets.lm's sizes."""
    return nets.lm_for_method(method, rate, **shape)


def flops(hidden: int, layers: int, batch: int, steps: int, vocab: int) -> tuple[float, float]:
    """(recurrent, reducible) FLOPs of one forward pass (2 per multiply-add)."""
    tokens = batch * steps
    gates = 4 * hidden
    recurrent = 2.0 * layers * tokens * hidden * gates
    # the embedding width equals hidden, so every layer's input is hidden wide
    input_to_gates = 2.0 * layers * tokens * hidden * gates
    decoder = 2.0 * tokens * hidden * vocab
    return recurrent, input_to_gates + decoder


def bound(recurrent: float, reducible: float, rate: float) -> float:
    return (recurrent + reducible) / (recurrent + (1 - rate) * reducible)


def x_transform_net(hidden: int, batch: int, steps: int) -> str:
    """Stock LSTM's input-to-gates product on its own (for the time bound)."""
    return (f'name: "x_transform"\nforce_backward: true\n'
            f'layer {{ name: "x" type: "Input" top: "x" '
            f'input_param {{ shape {{ dim: {steps} dim: {batch} dim: {hidden} }} }} }}\n'
            f'layer {{ name: "x_transform" type: "InnerProduct" bottom: "x" top: "g" '
            f'inner_product_param {{ num_output: {4 * hidden} axis: 2 '
            f'weight_filler {{ type: "uniform" min: -0.04 max: 0.04 }} }} }}\n')


def time_bound(stock: dict[str, float], x_transform_ms: float, layers: int,
               rate: float) -> tuple[float, float]:
    """(stock ms of the reducible work, stock / (stock - rate * that))."""
    reducible = (layers * x_transform_ms + stock["decoder"] +
                 sum(ms for name, ms in stock.items() if name.startswith("drop")))
    total = sum(stock.values())
    return reducible, total / (total - rate * reducible)


def layer_split(timings: list[caffe_time.Timing]) -> dict[str, float]:
    """Median forward + backward ms per layer, LSTM layers' dropouts folded in."""
    names = timings[0].forward
    return {name: statistics.median(t.forward[name] + t.backward.get(name, 0.0)
                                    for t in timings) for name in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--hidden", type=int, default=1500)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--steps", type=int, default=35)
    parser.add_argument("--vocab", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=3,
                        help="iterations per `caffe time` run")
    parser.add_argument("--methods", nargs="+", choices=list(LM_METHODS),
                        default=DEFAULT_METHODS,
                        help=f"default: {' '.join(DEFAULT_METHODS)} (stock is always timed); "
                             + LM_METHOD_HELP)
    parser.add_argument("--gpu", type=int, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench")
    parser.add_argument("--summarise", type=Path, metavar="JSON",
                        help="time nothing; write the markdown tables of an earlier "
                             "bench_lstm.json beside it")
    args = parser.parse_args(argv)
    if args.summarise:
        return bench_results.write_summary(args.summarise, markdown, "bench_lstm")
    if any(not 0 <= r < 1 for r in args.rates):
        parser.error("--rates must be in [0, 1)")
    if min(args.repeats, args.iterations, args.hidden, args.layers, args.batch,
           args.steps, args.vocab) < 1:
        parser.error("sizes, --repeats and --iterations must be >= 1")
    shape = dict(hidden=args.hidden, num_layers=args.layers, batch=args.batch,
                 steps=args.steps, vocab=args.vocab)
    methods = ["stock"] + [m for m in args.methods if m != "stock"]
    approx = methods[1:]
    recurrent, reducible = flops(args.hidden, args.layers, args.batch, args.steps, args.vocab)
    print(f"LSTM LM {args.layers} x {args.hidden}, batch {args.batch}, {args.steps} steps, "
          f"vocabulary {args.vocab}: {recurrent / 1e9:.1f} GFLOP recurrent + "
          f"{reducible / 1e9:.1f} GFLOP reducible per forward pass")
    print(f"{'p':>4} {'stock ms':>9} " + " ".join(
        f"{label(m) + ' ms':>12} {'ratio':>6}" for m in approx) +
        f" {'bound':>6} {'bound+rec':>9} {'time bound':>10}", flush=True)
    rows = []
    for rate in args.rates:
        with tempfile.TemporaryDirectory() as tmp:
            models = {}
            for method in methods:
                models[method] = Path(tmp) / f"lm_{method}.prototxt"
                models[method].write_text(method_net(method, rate, shape))
            try:
                timings = caffe_time.run_rotating(models, args.repeats, args.iterations,
                                                  args.gpu)
            except (caffe_time.CaffeTimeError, caffe_env.CaffeNotBuiltError) as err:
                print(f"bench_lstm: error: {err}", file=sys.stderr)
                return 1
            xt_path = Path(tmp) / "x_transform.prototxt"
            xt_path.write_text(x_transform_net(args.hidden, args.batch, args.steps))
            xt = caffe_time.run_rotating({"xt": xt_path}, args.repeats, args.iterations,
                                         args.gpu)["xt"]
        xt_ms = statistics.median(t.forward["x_transform"] + t.backward["x_transform"]
                                  for t in xt)
        runs = {f: [t.iteration for t in ts] for f, ts in timings.items()}
        med = {f: statistics.median(r) for f, r in runs.items()}
        if min(med.values()) <= 0:
            parser.error("the net runs too fast for caffe time's millisecond timer; "
                         "raise --iterations")
        limit = bound(recurrent, reducible, rate)
        layers_ms = {f: layer_split(ts) for f, ts in timings.items()}
        reducible_ms, t_limit = time_bound(layers_ms["stock"], xt_ms, args.layers, rate)
        row = {"rate": rate, "median_ms": med, "runs_ms": runs, "bound": limit,
               "bound_recurrent": 1 / (1 - rate),
               "x_transform_ms": xt_ms, "reducible_ms": reducible_ms, "time_bound": t_limit,
               "ratio": {f: med["stock"] / med[f] for f in approx}, "layers_ms": layers_ms}
        rows.append(row)
        r = row["ratio"]
        print(f"{rate:>4.1f} {med['stock']:>9.1f} " + " ".join(
            f"{med[m]:>12.1f} {r[m]:>6.2f}" for m in approx) +
            f" {limit:>6.2f} {1 / (1 - rate):>9.2f} {t_limit:>10.2f}", flush=True)
    last = rows[-1]["layers_ms"]
    print(f"\nwhere the time goes at p = {rows[-1]['rate']:g} (median ms per iteration, "
          f"forward + backward; stock's Dropout layers listed on their own):")
    print(f"{'layer':>10} " + " ".join(f"{label(m):>9}" for m in methods))
    for name in last["stock"]:
        cells = [last[m].get(name) for m in methods]
        print(f"{name[:10]:>10} " + " ".join(f"{c:>9.1f}" if c is not None else f"{'—':>9}"
                                             for c in cells))
    share = rows[-1]["reducible_ms"] / sum(last["stock"].values())
    print(f"stock time in reducible work (input transforms "
          f"{args.layers} x {rows[-1]['x_transform_ms']:.1f} ms, decoder, Dropout): "
          f"{share:.0%}; by FLOPs it is {reducible / (recurrent + reducible):.0%}")
    bench_results.save(args.out, "bench_lstm",
                       {"repeats": args.repeats, "iterations": args.iterations,
                        "shape": shape, "gflop_recurrent": recurrent / 1e9,
                        "gflop_reducible": reducible / 1e9, "rows": rows},
                       args.gpu, lambda path: plot(rows, path))
    saved = json.loads((args.out / "bench_lstm.json").read_text())
    write_text_atomic(args.out / "bench_lstm.md", markdown(saved))
    return 0


def markdown(result: dict) -> str:
    """The tables of a bench_lstm.json: speed per method and rate, and where
    the time goes at the last rate."""
    rows = result["rows"]
    approx = list(rows[0]["ratio"])
    shape = result["shape"]
    lines = [f"Command: `{result['command']}`", "", f"Machine: {result['machine']}", "",
             f"LSTM LM {shape['num_layers']} x {shape['hidden']}, batch {shape['batch']}, "
             f"{shape['steps']} steps, vocabulary {shape['vocab']}; `caffe time`, TRAIN phase, "
             f"{result['iterations']} iterations per run, medians of {result['repeats']} "
             f"rotating repeats; ratio = stock ms / method ms. FLOP bound: input dropout "
             f"only (R + D)/(R + (1-p) D) with R = {result['gflop_recurrent']:.1f} GFLOP "
             f"recurrent and D = {result['gflop_reducible']:.1f} GFLOP reducible per forward "
             f"pass; with recurrent dropout 1/(1-p); time bound: input dropout only, with "
             f"the measured stock time of the reducible work.", "",
             "| p | stock ms | " + " | ".join(label(m) for m in approx)
             + " | FLOP bound | FLOP bound +rec | time bound |",
             "|---|---|" + "---|" * (len(approx) + 3)]
    for row in rows:
        med = row["median_ms"]
        lines.append(f"| {row['rate']:g} | {med['stock']:.0f} | " + " | ".join(
            f"{med[m]:.0f} ms, {row['ratio'][m]:.2f}×" for m in approx)
            + f" | {row['bound']:.2f} | {1 / (1 - row['rate']):.2f} | "
              f"{row['time_bound']:.2f} |")
    last = rows[-1]["layers_ms"]
    methods = list(last)
    lines += ["", f"Where the time goes at p = {rows[-1]['rate']:g} (median ms per iteration, "
              f"forward + backward):", "",
              "| layer | " + " | ".join(label(m) for m in methods) + " |",
              "|---|" + "---|" * len(methods)]
    for name in last["stock"]:
        cells = [last[m].get(name) for m in methods]
        lines.append(f"| {name} | " + " | ".join(
            "—" if c is None else f"{c:.0f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.8))
    x = list(range(len(rows)))
    approx = list(rows[0]["ratio"])
    width = 0.8 / len(approx)
    for j, method in enumerate(approx):
        ax.bar([i - 0.4 + width * (j + 0.5) for i in x], [r["ratio"][method] for r in rows],
               width, label=label(method))
    ax.plot(x, [r["bound"] for r in rows], "k_", ms=30, mew=2, label="FLOP bound (input)")
    if any(lm_method_settings(m).recurrent for m in approx):
        ax.plot(x, [1 / (1 - r["rate"]) for r in rows], "_", color="C3", ms=30, mew=2,
                label="FLOP bound (+rec)")
    ax.plot(x, [r["time_bound"] for r in rows], "_", color="gray", ms=30, mew=2,
            label="time bound")
    ax.axhline(1, color="k", lw=0.8)
    ax.set_xticks(x, [f"p = {r['rate']:g}" for r in rows])
    ax.set_ylabel("speedup per iteration over stock Dropout")
    ax.set_title("LSTM LM, caffe time")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
