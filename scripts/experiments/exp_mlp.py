#!/usr/bin/env python3
"""MLP experiments on Fashion-MNIST: stock Dropout vs approximate dropout.

  rates  the paper's Fig. 4: 784-2048-2048-10, dropout (p, p) for p in
         0.3 / 0.5 / 0.7; stock Dropout, RDP (strided layout, the layer's
         default slices) and TDP (the layer's defaults), and the paper's settings
         beside them: one pattern per batch (RDP; row-major TDP) and RDP with
         the paper's searched distribution (N = 2048); 3 seeds.
  sizes  the paper's Table I: 1024x64, 1024x1024, 2048x2048, 4096x4096 at
         (0.7, 0.7); stock, RDP, TDP (defaults and the paper's settings);
         3 seeds, 4 epochs (CPU budget).
  slices the accuracy half of the measurement behind the default
         batch_slices: 2048x2048 at p = 0.7, RDP with 1 ... 8 slices, TDP
         with 1 and 4, 2 seeds, 2 epochs (speed: scripts/bench/bench_mlp.py).
  layout the row layouts and pattern propagation: 2048x2048 at p = 0.7,
         RDP strided (the paper's) and block, each with 2 slices
         and one pattern per batch, and with patterns propagated (block and
         strided); 2 seeds, 2 epochs (speed: scripts/bench/bench_mlp.py).
  demo   the README's main job: 2048x2048 at (0.5, 0.5), stock vs RDP (the
         layer's defaults at p = 0.5: block layout, one pattern per batch),
         one seed, a short fixed budget; prints the
         comparison and saves a plot.

Training: Caffe's SGD, batch 128, lr 0.01, momentum 0.9, no weight decay;
Fashion-MNIST from Debian's dataset-fashion-mnist, converted once to HDF5.
Each run reports test accuracy (all 10 000 test images; final and best of
the evaluations) and the wall time per training iteration; speedup = median
stock time per iteration / median approx time, over the runs of this
experiment (only where both ran on one kind of machine: else "—"). Runs are resumable: finished ones (out/runs/*.json) are skipped.

    scripts/experiments/exp_mlp.py rates [--quick] [--seeds 0 1 2] [--iterations N]
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

from approx_dropout import caffe_env
from approx_dropout.data import fashion_mnist as data_fashion_mnist
from approx_dropout.data.cache import DataError
from approx_dropout.harness import experiments, train
from approx_dropout.methods import METHOD_HELP, RDP_LAYOUTS, method_label, method_settings
from approx_dropout.files import write_text_atomic
from approx_dropout.prototxt import nets

REPO = Path(__file__).resolve().parents[2]
UPDATES = ("AUTO", "STOCK", "FUSED")  # approx_dropout_param.update of the solver

EPOCH = 469  # iterations of batch 128 over 60 000 images
SETUPS = {
    "rates": dict(models=[(2048, 2048)], rates=[0.3, 0.5, 0.7],
                  methods=["stock", "rdp", "rdp_s1", "rdp_paper", "tdp", "tdp_s1_rowmajor"],
                  seeds=[0, 1, 2], iterations=10 * EPOCH, quick_iterations=2 * EPOCH),
    "sizes": dict(models=[(1024, 64), (1024, 1024), (2048, 2048), (4096, 4096)],
                  rates=[0.7], methods=["stock", "rdp", "rdp_s1", "tdp", "tdp_s1_rowmajor"],
                  seeds=[0, 1, 2],
                  # 4 epochs, not 10: the 4096x4096 stock run alone takes 0.15 s per
                  # iteration on 2 CPU cores; --iterations 4690 for the paper's budget
                  iterations=4 * EPOCH, quick_iterations=2 * EPOCH),
    # how many batch slices: the measurement behind the layers' default
    "slices": dict(models=[(2048, 2048)], rates=[0.7],
                   methods=["stock", "rdp_s1", "rdp_s2", "rdp_s4", "rdp_s8",
                            "tdp_s1_rowmajor", "tdp_s4"],
                   seeds=[0, 1], iterations=2 * EPOCH, quick_iterations=EPOCH),
    # the layouts of ROW patterns and pattern propagation (same numbers, faster)
    "layout": dict(models=[(2048, 2048)], rates=[0.7],
                   methods=["stock", "rdp", "rdp_s1", "rdp_block", "rdp_block_s1",
                            "rdp_prop", "rdp_strided_prop"],
                   seeds=[0, 1], iterations=2 * EPOCH, quick_iterations=EPOCH),
    # RDP as the layer defaults it at p = 0.5: block layout, one pattern per batch
    # 500 iterations (1.1 epochs): the fresh-machine demo stays within 8 minutes
    "demo": dict(models=[(2048, 2048)], rates=[0.5], methods=["stock", "rdp_block_s1"], seeds=[0],
                 iterations=500, quick_iterations=200, test_every=125),
}


def method_order(method: str) -> tuple[int, int, int, int, str]:
    """Table order: flavour, the paper's distribution, layout (strided, the
    paper's, first), propagation, then the other fields."""
    settings = method_settings(method)
    fields = dict(settings.fields)
    layout = fields.pop("layout", "STRIDED")
    return (nets.MLP_FLAVOURS.index(settings.flavour), int(settings.paper_distribution),
            RDP_LAYOUTS.index(str(layout)), int(settings.propagate),
            str(sorted(fields.items())))


def color(method: str, methods: list[str]) -> str:
    return f"C{methods.index(method) % 10}"


def model_name(hidden: tuple[int, ...]) -> str:
    return "-".join(str(n) for n in (784, *hidden, 10))


def net_text(method: str, hidden: tuple[int, int], rate: float, lists: dict[str, Path]) -> str:
    return nets.mlp_for_method(method, hidden, (rate,) * len(hidden),
                               sources=(str(lists["train"]), str(lists["test"])))


def summarise(records: list[dict]) -> list[dict]:
    """One row per (model, rate, method): accuracy over seeds, time, speedup."""
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        r = rec["run"]
        groups.setdefault((r["model"], r["rate"], r["method"]), []).append(rec)
    rows = []
    for (model, rate, method), recs in sorted(groups.items(), key=lambda kv: (
            [int(n) for n in kv[0][0].split("-")], kv[0][1], method_order(kv[0][2]))):
        final = [x["result"]["final_accuracy"] for x in recs]
        best = [x["result"]["best_accuracy"] for x in recs]
        spi = statistics.median(x["result"]["seconds_per_iteration"] for x in recs)
        rows.append({"model": model, "rate": rate, "method": method, "seeds": len(recs),
                     "cpus": sorted({x["machine"].split(";")[0] for x in recs}),
                     "final_accuracy": statistics.mean(final),
                     "final_accuracy_std": statistics.stdev(final) if len(final) > 1 else 0.0,
                     "best_accuracy": statistics.mean(best), "ms_per_iteration": 1e3 * spi})
    for row in rows:
        stock = next((s for s in rows if s["model"] == row["model"] and s["rate"] == row["rate"]
                      and s["method"] == "stock"), None)
        # times compare only between runs on one kind of machine
        same_machine = stock is not None and row["cpus"] == stock["cpus"]
        row["speedup"] = (stock["ms_per_iteration"] / row["ms_per_iteration"]
                          if same_machine else None)
        row["delta_pp"] = (100 * (row["final_accuracy"] - stock["final_accuracy"])
                           if stock else None)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| model | p | method | seeds | test acc. (final) | Δ vs stock | best | ms/iter "
             "| speedup |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        delta = "—" if r["method"] == "stock" or r["delta_pp"] is None else f"{r['delta_pp']:+.2f} pp"
        speed = "—" if r["speedup"] is None else f"{r['speedup']:.2f}×"
        mixed = " (mixed machines)" if len(r["cpus"]) > 1 else ""
        # a spread needs two seeds: one seed's row shows its value alone
        spread = f" ± {100 * r['final_accuracy_std']:.2f}" if r["seeds"] > 1 else ""
        lines.append(f"| {r['model']} | {r['rate']:g} | {method_label(r['method'])} | "
                     f"{r['seeds']} | "
                     f"{100 * r['final_accuracy']:.2f} %{spread} | "
                     f"{delta} | {100 * r['best_accuracy']:.2f} % | "
                     f"{r['ms_per_iteration']:.1f}{mixed} | {speed} |")
    return "\n".join(lines) + "\n"


def curves_markdown(records: list[dict]) -> str:
    """Test accuracy at every evaluation, mean over the seeds, per (model, p, method)."""
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        r = rec["run"]
        groups.setdefault((r["model"], r["rate"], r["method"]), []).append(rec)
    iterations = sorted({e["iteration"] for rec in records
                         for e in rec["result"]["evaluations"]})
    lines = ["| model | p | method | seeds | " + " | ".join(str(i) for i in iterations) + " |",
             "|---|---|---|---|" + "---|" * len(iterations)]
    for (model, rate, method), recs in sorted(groups.items(), key=lambda kv: (
            [int(n) for n in kv[0][0].split("-")], kv[0][1], method_order(kv[0][2]))):
        cells = []
        for it in iterations:
            acc = [e["accuracy"] for rec in recs for e in rec["result"]["evaluations"]
                   if e["iteration"] == it]
            cells.append(f"{100 * statistics.mean(acc):.1f}" if len(acc) == len(recs) else "—")
        lines.append(f"| {model} | {rate:g} | {method_label(method)} | {len(recs)} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], records: list[dict], path: Path, experiment: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    if experiment == "demo":
        for rec in records:
            ev = rec["result"]["evaluations"]
            spi = rec["result"]["seconds_per_iteration"]
            name = f"{method_label(rec['run']['method'])} ({1e3 * spi:.1f} ms/iter)"
            ax1.plot([e["iteration"] * spi for e in ev], [100 * e["accuracy"] for e in ev],
                     marker="o", label=name)
            ax2.plot([e["iteration"] for e in ev], [e["loss"] for e in ev], marker="o",
                     label=name)
        ax1.set_xlabel("training time, s")
        ax1.set_ylabel("test accuracy, %")
        ax2.set_xlabel("iteration")
        ax2.set_ylabel("test loss")
        ax1.legend()
    else:
        xkey = "rate" if experiment == "rates" else "model"
        xs = sorted({r[xkey] for r in rows}, key=lambda v: (v if xkey == "rate" else
                                                             [int(n) for n in v.split("-")]))
        methods = sorted({r["method"] for r in rows}, key=method_order)
        for method in methods:
            sel = {r[xkey]: r for r in rows if r["method"] == method}
            if not sel:
                continue
            pts = [x for x in xs if x in sel]
            pos = [xs.index(x) for x in pts]
            if method != "stock":
                ax1.plot(pos, [sel[x]["speedup"] for x in pts], marker="o",
                         color=color(method, methods), label=method_label(method))
            ax2.errorbar(pos, [100 * sel[x]["final_accuracy"] for x in pts],
                         yerr=[100 * sel[x]["final_accuracy_std"] for x in pts], marker="o",
                         capsize=3, color=color(method, methods), label=method_label(method))
        for ax in (ax1, ax2):
            # models as their hidden sizes ("784-1024-64-10" -> "1024×64"), to fit
            ax.set_xticks(range(len(xs)), [f"{x:g}" if xkey == "rate"
                                           else "×".join(x.split("-")[1:-1]) for x in xs])
            ax.set_xlabel("dropout rate p" if xkey == "rate" else "hidden layers (784-…-10)")
        ax1.axhline(1, color="k", lw=0.8)
        ax1.set_ylabel("speedup per iteration over stock")
        ax2.set_ylabel("test accuracy (final), %")
        ax1.legend()
        ax2.legend()
    fig.suptitle(f"Fashion-MNIST MLP, {experiment}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("experiment", choices=list(SETUPS))
    parser.add_argument("--quick", action="store_true",
                        help="fewer iterations and seed 0 only (a CPU-sized check)")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--rates", type=float, nargs="+", help="only these of the setup's rates")
    parser.add_argument("--models", nargs="+", metavar="MODEL",
                        help="only these of the setup's models, e.g. 784-4096-4096-10")
    parser.add_argument("--methods", nargs="+", metavar="METHOD",
                        help="these methods instead of the setup's (any of them, e.g. a "
                             "new layout on the rates experiment): " + METHOD_HELP)
    parser.add_argument("--iterations", type=int, help="training iterations per run")
    parser.add_argument("--test-every", type=int, help="default: iterations / 10 (demo: 125)")
    parser.add_argument("--test-iter", type=int, default=100,
                        help="TEST batches of 100 per evaluation (default: all 10 000)")
    parser.add_argument("--summary-only", action="store_true",
                        help="run nothing; summarise the runs already finished")
    parser.add_argument("--update", choices=UPDATES, default="AUTO",
                        help="the solver's approx_dropout_param.update: AUTO (default: "
                             "defer the update of what the layers skipped), STOCK "
                             "(Caffe's own), FUSED (one pass, nothing deferred); runs "
                             "are keyed without it, so give each its own --out")
    parser.add_argument("--gpu", type=int, default=None)
    parser.add_argument("--out", type=Path, help="default: scripts/results/mlp_<experiment> "
                                                 "(demo: build/demo)")
    args = parser.parse_args(argv)
    setup = SETUPS[args.experiment]
    iterations = args.iterations or setup["quick_iterations" if args.quick else "iterations"]
    seeds = args.seeds or ([0] if args.quick else setup["seeds"])
    test_every = args.test_every or setup.get("test_every") or max(1, iterations // 10)
    if min(iterations, test_every, args.test_iter) < 1:
        parser.error("--iterations, --test-every and --test-iter must be >= 1")
    methods = list(dict.fromkeys(args.methods or setup["methods"]))
    for method in methods:
        try:
            method_settings(method)
        except ValueError as err:
            parser.error(str(err))
    out = args.out or (REPO / "build" / "demo" if args.experiment == "demo"
                       else REPO / "scripts" / "results" / f"mlp_{args.experiment}")
    try:
        lists = data_fashion_mnist.prepare()
        caffe_env.import_caffe()
    except (DataError, caffe_env.CaffeNotBuiltError) as err:
        print(f"exp_mlp: error: {err}", file=sys.stderr)
        return 1
    rates = [r for r in setup["rates"] if args.rates is None or r in args.rates]
    if not rates:
        parser.error(f"no runs: choose --rates from {setup['rates']}")
    models = [h for h in setup["models"] if args.models is None or model_name(h) in args.models]
    if not models:
        parser.error(f"no runs: choose --models from "
                     f"{[model_name(h) for h in setup['models']]}")
    runs = [experiments.Run(args.experiment, model_name(hidden), method, rate, seed, iterations)
            for hidden in models for rate in rates for seed in seeds
            for method in methods]
    hidden_of = {model_name(h): h for h in setup["models"]}

    def train_one(run: experiments.Run, progress) -> dict:
        text = net_text(run.method, hidden_of[run.model], run.rate, lists)
        result = train.train(text, run.iterations, test_every, args.test_iter,
                             train.SolverSettings(seed=run.seed, update=args.update),
                             args.gpu, progress)
        accuracies = [e.accuracy for e in result.evaluations]
        return {**result.as_dict(), "final_accuracy": accuracies[-1],
                "best_accuracy": max(accuracies)}

    command, machine = experiments.invocation(__file__, argv, args.gpu)
    if not args.summary_only:
        experiments.execute(runs, out, train_one, machine, command)
    keys = {r.key for r in runs}
    records = [rec for key, rec in experiments.load_runs(out).items() if key in keys]
    rows = summarise(records)
    table = markdown(rows)
    command = experiments.producing_commands(records) or command
    machine = experiments.producing_machines(records) or machine
    print(table)
    # one set of summary files per budget, so quick and full runs sit side by side
    stem = f"mlp_{args.experiment}-i{iterations}"
    write = write_text_atomic
    write(out / f"{stem}.md", f"Command: `{command}`\n\nMachine: {machine}\n\n"
          f"{iterations} iterations per run (batch 128), seeds {seeds}.\n\n{table}")
    write(out / f"{stem}-curves.md", f"Test accuracy (%) after each evaluation (iteration), "
          f"mean over the seeds; runs of `{command}`.\n\n{curves_markdown(records)}")
    write(out / f"{stem}.json", json.dumps({"command": command, "machine": machine,
                                            "iterations": iterations, "rows": rows}, indent=1))
    with open(out / f"{stem}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "model", "rate", "method", "seed", "iterations",
                         "ms_per_iteration", "final_accuracy", "best_accuracy"])
        for rec in records:
            r, res = rec["run"], rec["result"]
            writer.writerow([r["key"], r["model"], r["rate"], r["method"], r["seed"],
                             r["iterations"], f"{1e3 * res['seconds_per_iteration']:.2f}",
                             f"{res['final_accuracy']:.4f}", f"{res['best_accuracy']:.4f}"])
    plot(rows, records, out / f"{stem}.png", args.experiment)
    print(f"wrote {out / stem}.md, -curves.md, .json, .csv and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
