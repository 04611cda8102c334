#!/usr/bin/env python3
"""Training speed as users see it: `caffe train` per iteration, stock vs approximate.

Every configuration is trained by `caffe train` (SGD, lr 0.01, momentum 0.9,
weight_decay 5e-4, DummyData input, no TEST net, no snapshot) in each variant
in turn, the order rotated every repeat. An iteration's time is the spacing of
glog's timestamps on the solver's per-iteration display lines after the warm-up
iterations (setup and the first iterations excluded; so is the deferred
update's one catch-up when Step returns, which a long run spreads over all its
iterations); medians of --repeats.
A variant is a net and the solver's approx_dropout_param.update:

  stock         stock Caffe: InnerProduct + ReLU + Dropout, Caffe's own update
  stock_fused   the same net, the one-pass update (update: FUSED): that pass's gain alone
  approx_stock  the approximate net, Caffe's own update (update: STOCK): before the deferral
  approx        the approximate net as `caffe train` runs it (update: AUTO: deferred)
  approx_unwired  (MLP) the approximate net without pattern propagation, AUTO

Configurations: mlp (784-H-H-10, batch 128, for --hidden and --rates; the
approximate net: BLOCK, the layer's default slices (1 up to p = 0.5, else 2),
patterns propagated), caffenet
(BVLC CaffeNet's classifier head, fc6 ... fc8 + loss as in
models/bvlc_reference_caffenet/train_val.prototxt of Caffe's source, pool5 fed
by DummyData of batch x 256 x 6 x 6, converted by `approx-dropout convert`
with its defaults, for --caffenet-batches), lm (the 2 x 1500 LSTM LM of
bench_lstm, p = 0.5, input dropout: method row). Beside the training figure,
`caffe time` (forward + backward only, no solver) of the stock and approximate
nets, labelled as such. Writes JSON, a markdown table and a plot to --out.

    scripts/bench/bench_train.py [--configs mlp caffenet lm] [--hidden 2048 4096]
                                 [--rates 0.5 0.7] [--repeats 3] [--merge]

--merge keeps the rows of an earlier OUT/bench_train.json that this run does
not measure (a rerun of some configurations after a change).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from approx_dropout import caffe_env
from approx_dropout.harness import caffe_time
from approx_dropout.harness import results as bench_results
from approx_dropout.methods import method_label
from approx_dropout.prototxt import nets, rules
from approx_dropout.prototxt.convert import convert_net
from approx_dropout.files import write_text_atomic
from approx_dropout.prototxt.io import net_to_text, read_net

REPO = Path(__file__).resolve().parents[2]

VARIANT_LABELS = {
    "stock": "stock Caffe",
    "stock_fused": "stock net, fused update",
    "approx_stock": "approx., Caffe's update",
    "approx": "approx. (default: deferred update)",
    "approx_unwired": "approx. unpropagated, deferred",
}
# variant -> (which net, solver update)
VARIANTS = {"stock": ("stock", "STOCK"), "stock_fused": ("stock", "FUSED"),
            "approx_stock": ("approx", "STOCK"), "approx": ("approx", "AUTO"),
            "approx_unwired": ("unwired", "AUTO")}

# glog: "I1201 11:20:33.123456  4242 solver.cpp:218] Iteration 12, loss = 2.3"
# (upstream Caffe adds " (x iter/s, ...)" after the number).
_DISPLAY = re.compile(r"^I\d{4,8} (\d\d):(\d\d):(\d\d\.\d+)\s+\d+ [^\]]+\] "
                      r"Iteration (\d+)(?: \([^)]*\))?, loss = ")
_UPDATE_LINE = re.compile(r"\] (approx-dropout: .*)$")


class TrainTimeError(RuntimeError):
    pass


@dataclass
class Config:
    """One net in its flavours, and how long to train it."""
    key: str                  # e.g. "mlp 784-4096-4096-10 p=0.7"
    nets: dict[str, str]      # "stock" / "approx" / "unwired" -> prototxt text
    warmup: int
    measure: int
    info: dict


def iteration_times(log: str) -> dict[int, float]:
    """Seconds since midnight at each display line, by iteration."""
    times: dict[int, float] = {}
    last = None
    day = 0.0
    for line in log.splitlines():
        if m := _DISPLAY.match(line):
            t = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)) + day
            if last is not None and t < last:  # past midnight
                day += 86400
                t += 86400
            times[int(m.group(4))] = t
            last = t
    return times


def train_ms(net_text: str, update: str, warmup: int, measure: int, workdir: Path,
             gpu: int | None) -> tuple[float, str]:
    """Milliseconds per `caffe train` iteration, and the deferred update's log line."""
    net = workdir / "net.prototxt"
    net.write_text(net_text)
    solver = workdir / "solver.prototxt"
    solver.write_text(
        f'net: "{net}"\nbase_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.0005\n'
        f'lr_policy: "fixed"\nmax_iter: {warmup + measure}\ndisplay: 1\n'
        f'snapshot_after_train: false\nrandom_seed: 1\n'
        f'solver_mode: {"GPU" if gpu is not None else "CPU"}\n'
        f"approx_dropout_param {{ update: {update} }}\n")
    log = caffe_time.run_tool(["train", f"-solver={solver}"], str(net), gpu)
    times = iteration_times(log)
    end = warmup + measure - 1  # the last iteration's display line
    if warmup not in times or end not in times:
        raise TrainTimeError(f"no display lines for iterations {warmup} and {end} "
                             f"in the caffe train log")
    note = next((m.group(1) for ln in log.splitlines()
                 if (m := _UPDATE_LINE.search(ln))), "")
    return 1000 * (times[end] - times[warmup]) / (end - warmup), note


def random_labels(net, classes: int):
    """Uniform random labels from the DummyData layer (its second top): a
    constant label is learnt in a few iterations, after which the gradients
    shrink into subnormal floats and the GEMMs slow down tenfold (seen: stock
    Caffe at 1.9 s per iteration instead of 0.15)."""
    data = next(layer for layer in net.layer if layer.type == "DummyData")
    filler = data.dummy_data_param.data_filler[1]
    filler.Clear()
    filler.type = "uniform"
    filler.min = 0
    filler.max = classes - 1e-3  # SoftmaxWithLoss truncates to 0 .. classes - 1
    return net


def mlp_config(hidden: int, rate: float) -> Config:
    # the layer's default slices at this rate, named, so the label says them
    slices = rules.default_batch_slices(
        caffe_env.import_caffe_pb2().ApproxDropoutParameter(dropout_ratio=rate))
    approx, unwired = f"rdp_prop_s{slices}", f"rdp_block_s{slices}"
    text = {}
    for name, method in (("stock", "stock"), ("approx", approx), ("unwired", unwired)):
        net = caffe_env.import_caffe_pb2().NetParameter()
        text_format.Parse(nets.mlp_for_method(method, (hidden, hidden), (rate, rate)), net)
        text[name] = net_to_text(random_labels(net, 10), "bench_train: " + method)
    return Config(f"mlp 784-{hidden}-{hidden}-10 p={rate:g}", text, 10, 50,
                  {"net": f"784-{hidden}-{hidden}-10", "batch": 128, "rate": rate,
                   "approx": method_label(approx) + " (the layer's default slices)",
                   "unwired": method_label(unwired)})


def caffenet_head(batch: int) -> Config:
    """CaffeNet's fc6 ... loss, pool5 and label from DummyData."""
    source = caffe_env.caffe_source_dir() / "models/bvlc_reference_caffenet/train_val.prototxt"
    full = read_net(source)
    net = full.__class__(name=f"caffenet_head_b{batch}")
    data = net.layer.add(name="data", type="DummyData", top=["pool5", "label"])
    data.dummy_data_param.shape.add().dim.extend([batch, 256, 6, 6])
    data.dummy_data_param.data_filler.add(type="uniform", min=0, max=1)
    data.dummy_data_param.shape.add().dim.append(batch)
    data.dummy_data_param.data_filler.add()
    random_labels(net, 1000)
    names = [layer.name for layer in full.layer]
    for layer in full.layer[names.index("fc6"):]:
        if any(rule.phase == 1 for rule in layer.include):  # TEST only (accuracy)
            continue
        net.layer.add().CopyFrom(layer)
    converted, report = convert_net(net)
    rate = next(layer.dropout_param.dropout_ratio for layer in net.layer
                if layer.type == "Dropout")
    header = f"{source.relative_to(source.parents[2])}: fc6 ... loss, batch {batch}"
    text = {"stock": net_to_text(net, header),
            "approx": net_to_text(converted, header + ", approx-dropout convert")}
    warmup, measure = (3, 10) if batch >= 128 else (5, 30)
    return Config(f"caffenet head batch {batch}", text, warmup, measure,
                  {"net": "CaffeNet fc6-fc8", "batch": batch, "rate": rate,
                   "approx": "approx-dropout convert, defaults (RDP, BLOCK, the layer's "
                             "default slices: 1 at p = 0.5, patterns wired between "
                             "converted layers)",
                   "converted": report.converted,
                   "wired": [w.describe() for w in report.wired]})


def lm_config() -> Config:
    text = {"stock": nets.lm_for_method("stock", 0.5), "approx": nets.lm_for_method("row", 0.5)}
    return Config("lm 2x1500 p=0.5", text, 1, 5,
                  {"net": "LM 2 x 1500", "batch": "20 x 35", "rate": 0.5,
                   "approx": "ROW input dropout (ApproxDropoutLSTM, decoder side INPUT)"})


def run_config(config: Config, variants: list[str], repeats: int, time_iterations: int,
               gpu: int | None) -> dict:
    runs: dict[str, list[float]] = {v: [] for v in variants}
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            shift = r % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                which, update = VARIANTS[variant]
                ms, note = train_ms(config.nets[which], update, config.warmup,
                                    config.measure, Path(tmp), gpu)
                runs[variant].append(ms)
                notes[variant] = note
        models = {}
        for which in ("stock", "approx"):
            models[which] = Path(tmp) / f"{which}.prototxt"
            models[which].write_text(config.nets[which])
        timed = caffe_time.run_rotating(models, repeats, time_iterations, gpu)
    median = {v: statistics.median(t) for v, t in runs.items()}
    time_ms = {w: [t.iteration for t in ts] for w, ts in timed.items()}
    time_median = {w: statistics.median(t) for w, t in time_ms.items()}
    return {"config": config.key, **config.info, "warmup": config.warmup,
            "measured_iterations": config.measure, "train_runs_ms": runs,
            "train_median_ms": median,
            "train_ratio": {v: median["stock"] / median[v] for v in variants},
            "update_log": notes, "time_runs_ms": time_ms, "time_median_ms": time_median,
            "time_ratio": time_median["stock"] / time_median["approx"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", choices=["mlp", "caffenet", "lm"],
                        default=["mlp", "caffenet", "lm"])
    parser.add_argument("--hidden", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.5, 0.7])
    parser.add_argument("--caffenet-batches", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int,
                        help="untimed iterations first (default: per net, 1 to 10)")
    parser.add_argument("--measure", type=int,
                        help="timed iterations (default: per net, 5 to 50)")
    parser.add_argument("--time-iterations", type=int, default=5,
                        help="iterations per `caffe time` run beside the training figure")
    parser.add_argument("--gpu", type=int, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench")
    parser.add_argument("--merge", action="store_true",
                        help="replace only the measured configurations' rows of an "
                             "earlier OUT/bench_train.json, keep its others")
    parser.add_argument("--summarise", type=Path, metavar="JSON",
                        help="time nothing; write the markdown table of an earlier "
                             "bench_train.json beside it")
    args = parser.parse_args(argv)
    if args.summarise:
        return bench_results.write_summary(args.summarise, markdown, "bench_train")
    if args.repeats < 1 or args.time_iterations < 1:
        parser.error("--repeats and --time-iterations must be >= 1")
    if (args.warmup is not None and args.warmup < 1) or (
            args.measure is not None and args.measure < 2):
        parser.error("--warmup must be >= 1 and --measure >= 2")
    if any(not 0 < r < 1 for r in args.rates):
        parser.error("--rates must lie in (0, 1)")
    rows = []
    try:
        configs: list[Config] = []
        if "mlp" in args.configs:
            configs += [mlp_config(h, r) for h in args.hidden for r in args.rates]
        if "caffenet" in args.configs:
            configs += [caffenet_head(b) for b in args.caffenet_batches]
        if "lm" in args.configs:
            configs.append(lm_config())
        for config in configs:
            config.warmup = args.warmup or config.warmup
            config.measure = args.measure or config.measure
            variants = ["stock", "stock_fused", "approx_stock", "approx"]
            if "unwired" in config.nets:
                variants.append("approx_unwired")
            row = run_config(config, variants, args.repeats, args.time_iterations, args.gpu)
            rows.append(row)
            print(f"{config.key}: train stock {row['train_median_ms']['stock']:.1f} ms; "
                  + ", ".join(f"{v} {row['train_ratio'][v]:.2f}x" for v in variants[1:])
                  + f"; caffe time {row['time_ratio']:.2f}x", flush=True)
    except (TrainTimeError, caffe_time.CaffeTimeError, caffe_env.CaffeNotBuiltError) as err:
        print(f"bench_train: error: {err}", file=sys.stderr)
        return 1
    result = {"repeats": args.repeats, "time_iterations": args.time_iterations,
              "rows": rows}
    earlier_path = args.out / "bench_train.json"
    earlier = json.loads(earlier_path.read_text()) if args.merge and \
        earlier_path.is_file() else None
    if earlier is not None:
        if (earlier["repeats"], earlier["time_iterations"]) != (args.repeats,
                                                                  args.time_iterations):
            print("bench_train: error: --merge needs the earlier run's --repeats and "
                  "--time-iterations", file=sys.stderr)
            return 1
        fresh = {row["config"]: row for row in rows}
        rows = [fresh.pop(row["config"], row) for row in earlier["rows"]] + list(fresh.values())
        result["rows"] = rows
    bench_results.save(args.out, "bench_train", result, args.gpu,
                       lambda path: plot(rows, path))
    saved = json.loads(earlier_path.read_text())
    if earlier is not None:  # name every command and machine behind the rows
        for key in ("command", "machine"):
            if earlier[key] != saved[key]:
                saved[key] = f"{earlier[key]}; {saved[key]}"
        write_text_atomic(earlier_path, json.dumps(saved, indent=1))
    write_text_atomic(args.out / "bench_train.md", markdown(saved))
    return 0


def markdown(result: dict) -> str:
    """Per-iteration `caffe train` ms and ratios vs stock, `caffe time` beside."""
    variants = list(VARIANTS)
    lines = [f"Command: `{result['command']}`", "", f"Machine: {result['machine']}", "",
             "`caffe train` per iteration (forward, backward and the solver's update; "
             "setup and warm-up excluded), medians of "
             f"{result['repeats']} rotating repeats; ratio = stock Caffe ms / variant ms. "
             "`caffe time`: forward + backward only, no update.", "",
             "| net | batch | p | stock Caffe ms | " + " | ".join(
                 VARIANT_LABELS[v] for v in variants[1:]) + " | `caffe time` ratio |",
             "|---|---|---|---|" + "---|" * len(variants)]
    for row in result["rows"]:
        med, ratio = row["train_median_ms"], row["train_ratio"]
        cells = [f"{med[v]:.1f} ms, {ratio[v]:.2f}×" if v in med else "—"
                 for v in variants[1:]]
        lines.append(f"| {row['net']} | {row['batch']} | {row['rate']:g} | "
                     f"{med['stock']:.1f} | " + " | ".join(cells)
                     + f" | {row['time_ratio']:.2f}× |")
    lines += ["", "Approximate nets: " + "; ".join(
        sorted({f"{r['net']}: {r['approx']}" for r in result["rows"]})) + "."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    variants = [v for v in VARIANTS if v != "stock"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / (len(variants) + 1)
    for j, variant in enumerate(variants):
        ax.bar([i - 0.4 + (j + 0.5) * width for i in range(len(rows))],
               [r["train_ratio"].get(variant, 0) for r in rows], width,
               label="train: " + VARIANT_LABELS[variant])
    ax.bar([i - 0.4 + (len(variants) + 0.5) * width for i in range(len(rows))],
           [r["time_ratio"] for r in rows], width, label="caffe time (no update)",
           color="grey", alpha=0.6)
    ax.axhline(1, color="k", lw=0.8)
    ax.set_xticks(list(range(len(rows))),
                  [f"{r['net']}\nb{r['batch']} p{r['rate']:g}" for r in rows],
                  fontsize="x-small")
    ax.set_ylabel("speedup per iteration over stock Caffe")
    ax.set_title("caffe train (forward, backward, update) vs caffe time")
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
