#!/usr/bin/env python3
"""The paper's MLP under `caffe time`: stock Dropout vs RDP vs TDP.

For each hidden size H, times 784-H-H-10 (batch 128, TRAIN phase) with stock
InnerProduct + ReLU + Dropout and with ApproxDropoutInnerProduct (ROW/OUTPUT
and TILE), running `caffe time` for the flavours in turn, `--repeats` times,
and prints the median forward-backward time per iteration and the ratio
stock / approx. Writes JSON and a plot.

    scripts/bench_mlp.py [--hidden 2048 4096] [--rate 0.7] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))

from approx_dropout import bench_results, caffe_env, caffe_time, nets  # noqa: E402


def time_flavours(hidden: int, rate: float, repeats: int, iterations: int,
                  gpu: int | None) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for flavour in nets.FLAVOURS:
            models[flavour] = Path(tmp) / f"mlp_{flavour}.prototxt"
            models[flavour].write_text(nets.mlp(flavour, (hidden, hidden), (rate, rate)))
        timings = caffe_time.run_rotating(models, repeats, iterations, gpu)
    return {f: [t.iteration for t in runs] for f, runs in timings.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--rate", type=float, default=0.7)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=10,
                        help="iterations per `caffe time` run")
    parser.add_argument("--gpu", type=int, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench")
    args = parser.parse_args(argv)
    if not 0 <= args.rate < 1 or args.repeats < 1 or args.iterations < 1:
        parser.error("--rate must be in [0, 1); --repeats and --iterations >= 1")
    rows = []
    print(f"{'MLP':>16} {'p':>4} {'stock ms':>9} {'RDP ms':>8} {'ratio':>6} "
          f"{'TDP ms':>8} {'ratio':>6}", flush=True)
    for hidden in args.hidden:
        try:
            times = time_flavours(hidden, args.rate, args.repeats, args.iterations, args.gpu)
        except (caffe_time.CaffeTimeError, caffe_env.CaffeNotBuiltError) as err:
            print(f"bench_mlp: error: {err}", file=sys.stderr)
            return 1
        med = {f: statistics.median(t) for f, t in times.items()}
        if min(med.values()) <= 0:
            # caffe time's forward-backward total has millisecond resolution
            parser.error(f"784-{hidden}-{hidden}-10 runs too fast for caffe time's "
                         f"millisecond timer; raise --iterations")
        row = {"hidden": hidden, "rate": args.rate, "median_ms": med, "runs_ms": times,
               "ratio": {f: med["stock"] / med[f] for f in ("rdp", "tdp")}}
        rows.append(row)
        print(f"{f'784-{hidden}-{hidden}-10':>16} {args.rate:>4.1f} {med['stock']:>9.2f} "
              f"{med['rdp']:>8.2f} {row['ratio']['rdp']:>6.2f} {med['tdp']:>8.2f} "
              f"{row['ratio']['tdp']:>6.2f}", flush=True)
    bench_results.save(args.out, "bench_mlp",
                       {"repeats": args.repeats, "iterations": args.iterations, "rows": rows},
                       args.gpu, lambda path: plot(rows, path))
    return 0


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.8))
    labels = [f"784-{r['hidden']}-{r['hidden']}-10" for r in rows]
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["ratio"]["rdp"] for r in rows], 0.4, label="RDP")
    ax.bar([i + 0.2 for i in x], [r["ratio"]["tdp"] for r in rows], 0.4, label="TDP")
    ax.axhline(1, color="k", lw=0.8)
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("speedup per iteration over stock Dropout")
    ax.set_title(f"caffe time, dropout {rows[0]['rate']:g}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
