"""BVLC's own nets through the tools: the nets that ship in Caffe's source
(models/ and examples/, downloaded by the build) with a Dropout layer.

Each net is converted three ways (default, --propagate all, --pattern TILE);
every result must set up in Caffe in both phases (approx_dropout.check, in a
child process, so that a refusal fails the test instead of ending pytest), train one
forward/backward pass, and give in TEST exactly the original's outputs with
the original's weights. Data layers become Input layers of the shapes the
prototxt gives (prototxt.shapes.data_as_inputs), with the batch cut to 2 to
keep the run short; the inputs are random.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import approx_dropout
from approx_dropout import caffe_env
from approx_dropout.prototxt import convert
from approx_dropout.prototxt import io as prototxt_io
from approx_dropout.prototxt import shapes as net_shapes

BATCH = 2
VARIANTS = {"default": {}, "propagate_all": {"propagate": "all"},
            "tile": {"pattern": "TILE"}}


def zoo_nets() -> list[Path]:
    try:
        source = caffe_env.caffe_source_dir()
    except Exception:  # no build here: the tests below report it
        return []
    found = [p for folder in ("models", "examples") for p in sorted((source / folder).rglob(
        "*.prototxt")) if "solver" not in p.name and '"Dropout"' in p.read_text(errors="replace")]
    return found


NETS = zoo_nets()


def test_the_corpus_is_there():
    """The build downloads Caffe's source, BVLC's nets included: an empty corpus
    would silently test nothing."""
    names = {f"{p.parent.name}/{p.name}" for p in NETS}
    assert {"bvlc_alexnet/train_val.prototxt", "bvlc_googlenet/train_val.prototxt",
            "bvlc_reference_caffenet/deploy.prototxt",
            "finetune_flickr_style/train_val.prototxt"} <= names, names


def _small_inputs(net, phase: int):
    """The net with Input layers of batch BATCH for its data, in phase."""
    swapped = net_shapes.data_as_inputs(net, phase)
    for layer in swapped.layer:
        if layer.type == "Input" and net_shapes.included(layer, phase):
            for shape in layer.input_param.shape:
                if len(shape.dim):
                    shape.dim[0] = min(shape.dim[0], BATCH)
    for i, _ in enumerate(swapped.input_shape):  # deploy nets' net-level inputs
        swapped.input_shape[i].dim[0] = min(swapped.input_shape[i].dim[0], BATCH)
    if len(swapped.input_dim):
        for i in range(0, len(swapped.input_dim), 4):
            swapped.input_dim[i] = min(swapped.input_dim[i], BATCH)
    return swapped


def _fill_inputs(net, rng: np.random.Generator) -> None:
    for name in net.inputs:
        blob = net.blobs[name].data
        if blob.ndim == 1 or name == "label":  # class labels
            blob[...] = rng.integers(0, 10, blob.shape)
        else:
            blob[...] = rng.normal(size=blob.shape)


@pytest.fixture(scope="module")
def converted(caffe_pb2):
    """(net path, variant) -> (original, converted NetParameter, report)."""
    out = {}
    for path in NETS:
        net = prototxt_io.read_net(path)
        for variant, options in VARIANTS.items():
            result, report = convert.convert_net(net, **options)
            out[(path, variant)] = (net, result, report)
    return out


@pytest.mark.parametrize("path", NETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_dropout_of_the_zoo_is_converted(converted, path):
    for variant in VARIANTS:
        net, result, report = converted[(path, variant)]
        dropouts = [x.name for x in net.layer if x.type == "Dropout"]
        assert report.refused == [], (variant, report.refused)
        assert len(report.converted) == len(dropouts)
        assert not any(x.type == "Dropout" for x in result.layer)
        wired = {w.consumer for w in report.wired}
        if variant == "tile":
            assert wired == set()
        if variant == "propagate_all" and path.parent.name != "bvlc_googlenet":
            # AlexNet-style heads: fc6 -> fc7 -> fc8, the classifier only skips
            assert len(wired) == 2, report.wired


@pytest.mark.parametrize("path", NETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_converted_zoo_nets_set_up_train_and_equal_the_original_in_test(
        caffe, converted, path, tmp_path):
    caffe.set_mode_cpu()
    rng = np.random.default_rng(0)
    names = []
    for variant in VARIANTS:
        net, result, _ = converted[(path, variant)]
        # the whole converted net, as the user gets it (data layers as Inputs)
        approx_dropout.check(result, data_as_inputs=True, timeout=120)
        for phase, phase_name in ((net_shapes.TRAIN, "TRAIN"), (net_shapes.TEST, "TEST")):
            file = tmp_path / f"{variant}_{phase_name}.prototxt"
            file.write_text(prototxt_io.net_to_text(_small_inputs(result, phase)))
            names.append((variant, phase_name, file))
    # TEST: the original's outputs, the original's weights
    original_file = tmp_path / "original_TEST.prototxt"
    original_file.write_text(prototxt_io.net_to_text(_small_inputs(
        converted[(path, "default")][0], net_shapes.TEST)))
    original = caffe.Net(str(original_file), caffe.TEST)
    # deploy nets have no fillers (their weights are all 0): He-scaled random
    # weights keep every layer's output of order 1
    for params in original.params.values():
        for blob in params:
            fan_in = int(np.prod(blob.data.shape[1:])) if blob.data.ndim > 1 else 0
            blob.data[...] = (rng.normal(scale=np.sqrt(2 / fan_in), size=blob.data.shape)
                              if fan_in else rng.uniform(-0.1, 0.1, blob.data.shape))
    weights = tmp_path / "original.caffemodel"
    original.save(str(weights))
    _fill_inputs(original, rng)
    original.forward()
    # every blob both nets have (the classifiers' scores, not only the
    # softmax, which random weights make near uniform), to its own scale
    outputs = {name: blob.data.copy() for name, blob in original.blobs.items()
               if name not in original.inputs}
    accuracies = {top for layer in converted[(path, "default")][0].layer
                  if layer.type == "Accuracy" for top in layer.top}
    for variant, phase_name, file in names:
        if phase_name != "TEST":
            continue
        approx = caffe.Net(str(file), str(weights), caffe.TEST)
        for name in original.inputs:
            approx.blobs[name].data[...] = original.blobs[name].data
        approx.forward()
        for name, value in outputs.items():
            assert approx.blobs[name].data.shape == value.shape, (variant, name)
            scale = float(np.abs(value).max())
            # (an Accuracy of random labels may well be 0)
            assert scale > 0 or name in accuracies, (variant, name)
            np.testing.assert_allclose(approx.blobs[name].data, value, rtol=0,
                                       atol=1e-5 * scale + 1e-30, err_msg=f"{variant}: {name}")
        del approx
    del original
    # TRAIN: one forward/backward pass with finite numbers, for each variant
    for variant, phase_name, file in names:
        if phase_name != "TRAIN":
            continue
        train = caffe.Net(str(file), caffe.TRAIN)
        _fill_inputs(train, rng)
        train.forward()
        train.backward()
        for name, blob in train.blobs.items():
            assert np.isfinite(blob.data).all() and np.isfinite(blob.diff).all(), \
                (variant, name)
        del train
