#!/usr/bin/env python3
"""LSTM language model on the Python-docs corpus: conventional vs ROW vs TILE.

The paper's Table II asks two things; this script does the accuracy half:
the small model (2 x 200, batch 20, 35 steps, vocabulary 10 000) trained for
a fixed budget at dropout 0.3 / 0.5 / 0.7 with stock Dropout, ROW and TILE,
reporting validation perplexity (the whole validation split, after each
tenth of the budget) and wall time per iteration. The speed half, on the
2 x 1500 model, is scripts/bench/bench_lstm.py.

Training follows Zaremba et al.'s small model: plain SGD (no momentum),
lr 1, gradient norm clipped at 5, weights uniform in [-0.1, 0.1]; the budget
is far shorter than their 13 epochs. Resumable like exp_mlp.py. The methods
(--methods) are the LSTM methods of approx_dropout.methods.

    scripts/experiments/exp_lstm.py [--quick] [--iterations N] [--rates 0.3 0.5 0.7]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from approx_dropout import caffe_env
from approx_dropout.data import text as data_text
from approx_dropout.data.cache import DataError
from approx_dropout.harness import experiments, train
from approx_dropout.methods import LM_METHOD_HELP, LM_METHODS, lm_method_label, lm_method_settings
from approx_dropout.files import write_text_atomic
from approx_dropout.prototxt import nets

REPO = Path(__file__).resolve().parents[2]

STEPS, STREAMS, VOCAB = 35, 20, 10000


def train_net(method: str, rate: float, hidden: int, sources: tuple[str, str]) -> str:
    """The LM a run trains: the method (approx_dropout.methods) at dropout rate
    `rate`; sources = (train list, validation list)."""
    return nets.lm_for_method(method, rate, hidden=hidden, batch=STREAMS, steps=STEPS,
                              vocab=VOCAB, init=0.1, sources=sources)


def final_test_net(method: str, rate: float, hidden: int, sources: tuple[str, str]) -> str:
    """The LM that reads the test split once, with the final weights (TEST
    phase: no dropout, so the method's flavour without recurrent dropout);
    sources = (train list, test list)."""
    return nets.lm(lm_method_settings(method).flavour, hidden=hidden, rate=rate,
                   batch=STREAMS, steps=STEPS, vocab=VOCAB, init=0.1, sources=sources)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--quick", action="store_true", help="300 iterations per run")
    parser.add_argument("--iterations", type=int, help="default 3880 (2 epochs)")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--methods", nargs="+", choices=list(LM_METHODS),
                        default=["stock", "row", "tile"],
                        help="default: stock row tile; " + LM_METHOD_HELP)
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--evaluations", type=int, default=10,
                        help="validation passes per run, evenly spaced (default 10)")
    parser.add_argument("--valid-batches", type=int,
                        help="batches per validation pass (default: the whole split)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--summary-only", action="store_true",
                        help="run nothing; summarise the runs already finished")
    parser.add_argument("--gpu", type=int, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "scripts" / "results" / "lstm_lm")
    args = parser.parse_args(argv)
    iterations = args.iterations or (300 if args.quick else 3880)
    if min(iterations, args.evaluations, args.valid_batches or 1) < 1 or any(
            not 0 <= r < 1 for r in args.rates):
        parser.error("--iterations, --evaluations, --valid-batches must be >= 1 and "
                     "--rates in [0, 1)")
    try:
        lists = data_text.prepare(STREAMS, STEPS, VOCAB)
        caffe_env.import_caffe()
    except (DataError, caffe_env.CaffeNotBuiltError) as err:
        print(f"exp_lstm: error: {err}", file=sys.stderr)
        return 1
    stats = json.loads((lists["train"].parent / "corpus.json").read_text())
    valid_batches = args.valid_batches or stats["splits"]["valid"]["batches"]
    model = f"lm-2x{args.hidden}"
    runs = [experiments.Run("lstm", model, method, rate, args.seed, iterations)
            for rate in args.rates for method in args.methods]

    def train_one(run: experiments.Run, progress) -> dict:
        text = train_net(run.method, run.rate, args.hidden,
                         (str(lists["train"]), str(lists["valid"])))
        settings = train.SolverSettings(base_lr=1.0, momentum=0.0, clip_gradients=5,
                                        seed=run.seed)
        # The test split, once, with the final weights (TEST phase: no dropout).
        test_text = final_test_net(run.method, run.rate, args.hidden,
                                   (str(lists["train"]), str(lists["test"])))
        test_batches = stats["splits"]["test"]["batches"]
        result = train.train(text, run.iterations, max(1, run.iterations // args.evaluations),
                             valid_batches, settings, args.gpu, progress,
                             final_tests={"test": (test_text, test_batches)})
        ppl = [e.perplexity for e in result.evaluations]
        return {**result.as_dict(), "final_perplexity": ppl[-1], "best_perplexity": min(ppl),
                "test_perplexity": result.final["test"].perplexity}

    command, machine = experiments.invocation(__file__, argv, args.gpu)
    if not args.summary_only:
        experiments.execute(runs, args.out, train_one, machine, command)
    done = experiments.load_runs(args.out)
    summarised = []
    lines = ["| p | method | valid perplexity (final) | vs stock | best | test perplexity | "
             "ms/iter | speedup |", "|---|---|---|---|---|---|---|---|"]
    rows = []
    for rate in args.rates:
        recs = {m: done.get(experiments.Run("lstm", model, m, rate, args.seed, iterations).key)
                for m in LM_METHODS}
        stock = recs["stock"]
        for method, rec in recs.items():
            if rec is None or stock is None:  # not run (yet)
                continue
            summarised.append(rec)
            res = rec["result"]
            rel = res["final_perplexity"] / stock["result"]["final_perplexity"] - 1
            speed = (stock["result"]["seconds_per_iteration"] / res["seconds_per_iteration"])
            rows.append({"rate": rate, "method": method, **{k: res[k] for k in (
                "final_perplexity", "best_perplexity", "seconds_per_iteration")},
                "test_perplexity": res.get("test_perplexity"),
                "relative_to_stock": rel, "speedup": speed})
            lines.append(f"| {rate:g} | {lm_method_label(method)} | "
                         f"{res['final_perplexity']:.1f} | "
                         f"{'—' if method == 'stock' else f'{100 * rel:+.1f} %'} | "
                         f"{res['best_perplexity']:.1f} | "
                         f"{res.get('test_perplexity', float('nan')):.1f} | "
                         f"{1e3 * res['seconds_per_iteration']:.0f} | {speed:.2f}× |")
    table = "\n".join(lines) + "\n"
    command = experiments.producing_commands(summarised) or command
    print(table)
    stem = args.out / f"lstm_lm-i{iterations}"  # one set of files per budget
    write_text_atomic(
        stem.with_suffix(".md"),
        f"Command: `{command}`\n\nMachine: {machine}\n\n{model}, {iterations} iterations "
        f"per run (batch {STREAMS} x {STEPS} steps), seed {args.seed}; corpus: "
        f"{stats['splits']['train']['tokens']} train / {stats['splits']['valid']['tokens']} "
        f"valid tokens.\n\n{table}")
    write_text_atomic(stem.with_suffix(".json"), json.dumps(
        {"command": command, "machine": machine, "iterations": iterations, "rows": rows},
        indent=1))
    plot(done, model, args.rates, iterations, args.seed, stem.with_suffix(".png"))
    print(f"wrote {stem}.md, .json and .png")
    return 0


def plot(done: dict, model: str, rates: list[float], iterations: int, seed: int,
         path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(rates), figsize=(4 * len(rates), 3.5), squeeze=False)
    for ax, rate in zip(axes[0], rates):
        for method in LM_METHODS:
            rec = done.get(experiments.Run("lstm", model, method, rate, seed, iterations).key)
            if rec:
                ev = rec["result"]["evaluations"]
                ax.plot([e["iteration"] for e in ev], [e["perplexity"] for e in ev],
                        marker="o", label=lm_method_label(method))
        ax.set_yscale("log")
        ax.set_title(f"p = {rate:g}")
        ax.set_xlabel("iteration")
    axes[0][0].set_ylabel("validation perplexity")
    axes[0][0].legend()
    fig.suptitle(f"{model} on Python docs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
