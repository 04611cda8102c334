"""Train a net with Caffe's SGD solver from pycaffe, timing and testing it.

Caffe's own solver does the training (forward, backward, momentum update);
this module only steps it in chunks, times the steps (testing excluded) and
evaluates the TEST net between chunks, so that experiments can report time
per iteration next to test accuracy or perplexity.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from google.protobuf import text_format

from .. import caffe_env


@dataclass
class Evaluation:
    iteration: int
    loss: float
    accuracy: float | None = None   # classifiers
    perplexity: float | None = None  # language models: exp(mean loss per word)


@dataclass
class TrainResult:
    iterations: int
    train_seconds: float               # solver steps only
    evaluations: list[Evaluation] = field(default_factory=list)
    final: dict[str, Evaluation] = field(default_factory=dict)  # after training

    @property
    def seconds_per_iteration(self) -> float:
        return self.train_seconds / self.iterations

    def as_dict(self) -> dict:
        out = asdict(self)
        out["seconds_per_iteration"] = self.seconds_per_iteration
        return out


@dataclass
class SolverSettings:
    base_lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_policy: str = "fixed"
    gamma: float = 0.5                 # for lr_policy "step"
    stepsize: int = 0
    clip_gradients: float = -1         # global L2 norm; < 0: off
    seed: int = 0
    # approx_dropout_param.update: AUTO (defer what approximate layers
    # skipped), STOCK (Caffe's own update) or FUSED (one pass, nothing deferred)
    update: str = "AUTO"


def solver_text(net_path: Path, iterations: int, settings: SolverSettings,
                test_iter: int, gpu: bool = False) -> str:
    pb2 = caffe_env.import_caffe_pb2()
    sp = pb2.SolverParameter()
    sp.net = str(net_path)
    sp.base_lr = settings.base_lr
    sp.momentum = settings.momentum
    sp.weight_decay = settings.weight_decay
    sp.lr_policy = settings.lr_policy
    if settings.lr_policy == "step":
        sp.gamma = settings.gamma
        sp.stepsize = settings.stepsize
    if settings.clip_gradients > 0:
        sp.clip_gradients = settings.clip_gradients
    sp.max_iter = iterations
    sp.random_seed = settings.seed
    sp.test_iter.append(test_iter)
    sp.test_interval = iterations + 1  # this module tests; Caffe's solver never does
    sp.test_initialization = False
    sp.display = 0
    sp.snapshot = 0
    sp.snapshot_after_train = False
    sp.solver_mode = sp.GPU if gpu else sp.CPU
    sp.approx_dropout_param.update = pb2.ApproxDropoutSolverParameter.Update.Value(
        settings.update)
    return text_format.MessageToString(sp)


def evaluate(test_net, test_iter: int, iteration: int) -> Evaluation:
    """Mean loss (and accuracy) over test_iter TEST batches."""
    loss = accuracy = 0.0
    has_accuracy = "accuracy" in test_net.outputs
    for _ in range(test_iter):
        out = test_net.forward()
        loss += float(out["loss"])
        if has_accuracy:
            accuracy += float(out["accuracy"])
    loss /= test_iter
    if has_accuracy:
        return Evaluation(iteration, loss, accuracy=accuracy / test_iter)
    return Evaluation(iteration, loss, perplexity=math.exp(min(loss, 700)))


def train(net_text: str, iterations: int, test_every: int, test_iter: int,
          settings: SolverSettings | None = None, gpu: int | None = None,
          progress: Callable[[int, float], None] | None = None,
          final_tests: dict[str, tuple[str, int]] | None = None) -> TrainResult:
    """Train net_text (TRAIN and TEST phases in one prototxt) for `iterations`.

    The TEST net is evaluated every test_every iterations and at the end.
    final_tests maps a name to (net text, batches): each such net is loaded
    in the TEST phase with the trained weights after training and evaluated
    once over that many batches (e.g. the test split), in result.final.
    For recurrent nets the TEST net's state carries on between evaluations,
    as Caffe's does; with test_iter equal to the number of TEST batches each
    evaluation covers the whole split once.
    """
    settings = settings or SolverSettings()
    if iterations < 1 or test_every < 1 or test_iter < 1:
        raise ValueError("iterations, test_every and test_iter must be >= 1")
    caffe = caffe_env.import_caffe()
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_mode_gpu()
        caffe.set_device(gpu)
    with tempfile.TemporaryDirectory(prefix="approx-dropout-train-") as tmp:
        net_path = Path(tmp) / "net.prototxt"
        net_path.write_text(net_text)
        solver_path = Path(tmp) / "solver.prototxt"
        solver_path.write_text(solver_text(net_path, iterations, settings, test_iter,
                                           gpu is not None))
        solver = caffe.SGDSolver(str(solver_path))
        # Caffe's Solver::Test shares the weights before each test; we test
        # ourselves, so share them once (the blobs stay shared).
        solver.test_nets[0].share_with(solver.net)
        result = TrainResult(iterations, 0.0)
        done = 0
        while done < iterations:
            chunk = min(test_every, iterations - done)
            start = time.perf_counter()
            solver.step(chunk)
            result.train_seconds += time.perf_counter() - start
            done += chunk
            result.evaluations.append(evaluate(solver.test_nets[0], test_iter, done))
            if progress:
                progress(done, result.train_seconds)
        for name, (text, batches) in (final_tests or {}).items():
            path = Path(tmp) / f"final-{len(result.final)}.prototxt"
            path.write_text(text)
            net = caffe.Net(str(path), caffe.TEST)
            net.share_with(solver.net)
            result.final[name] = evaluate(net, batches, iterations)
    return result
