"""The nets of approx_dropout.prototxt.nets: the committed prototxt/ files are
its output, they load in Caffe, and the approximate flavours equal the stock
net in the TEST phase."""
from __future__ import annotations

import re

import numpy as np
import pytest
from google.protobuf import text_format

from approx_dropout.harness import check as caffe_check
from approx_dropout.methods import method_settings
from approx_dropout.prototxt import nets
from conftest import REPO


def parse(caffe_pb2, text: str):
    return text_format.Parse(text, caffe_pb2.NetParameter())


def test_prototxt_folder_holds_the_committed_nets():
    assert sorted(p.name for p in (REPO / "prototxt").iterdir()) == sorted(nets.COMMITTED)


@pytest.mark.parametrize("name", sorted(nets.COMMITTED))
def test_committed_prototxt_is_the_generator_output(name):
    assert (REPO / "prototxt" / name).read_text() == nets.committed_text(name), (
        f"prototxt/{name} is stale: scripts/regenerate.py nets")


def test_committed_nets_load_in_caffe():
    """Every file builds in Caffe (the layers check their settings at setup);
    all but the 2 x 1500 LMs (a minute of CPU) also run forward once."""
    names = sorted(nets.COMMITTED)

    def passes(name: str) -> int:
        generator, kwargs = nets.COMMITTED[name]
        return 0 if generator is nets.lm and kwargs.get("hidden", 1500) >= 1500 else 1

    assert sorted(map(passes, names)) == [0] * 4 + [1] * 8
    outcomes = caffe_check.check_nets([
        caffe_check.Job((REPO / "prototxt" / name).read_text(), iterations=passes(name),
                        backward=False) for name in names], timeout=120)
    for name, outcome in zip(names, outcomes):
        assert outcome.loaded and outcome.finite, (name, outcome.describe())


def test_mlp_and_lm_follow_the_committed_examples():
    """The keyword arguments of COMMITTED are the functions' defaults otherwise."""
    assert nets.committed_text("mlp_bench_rdp.prototxt") == nets.mlp("rdp")
    assert nets.committed_text("mlp_bench_rdp_propagated.prototxt") == \
        nets.mlp("rdp", propagate=True)
    assert nets.committed_text("lm_small_tile.prototxt") == nets.lm("tile", hidden=200)
    text = nets.mlp("stock")
    assert text.startswith("# The paper's MLP (784-2048-2048-10, batch 128), stock dropout "
                           "0.7/0.7;\n# DummyData input")


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="flavour must be one of"):
        nets.mlp("bernoulli")
    with pytest.raises(ValueError, match="one dropout rate per hidden layer"):
        nets.mlp("rdp", (64, 64), (0.5,))
    with pytest.raises(ValueError, match="unknown variant"):
        nets.layer_pair("diagonal", 64, 0.5)
    for flavour in ("stock", "tdp"):
        with pytest.raises(ValueError, match="propagate applies to flavour rdp only"):
            nets.mlp(flavour, propagate=True)
    # approx_dropout_param fields are set through caffe_pb2: typos are caught here
    with pytest.raises(ValueError, match="ApproxDropoutParameter has no field 'layot'"):
        nets.mlp("rdp", approx_fields={"layot": "BLOCK"})
    with pytest.raises(ValueError, match="layout has no value 'DIAGONAL'"):
        nets.lm("row", approx_fields={"layout": "DIAGONAL"})


def test_propagated_mlp_wires_every_layer(caffe_pb2):
    text = nets.mlp("rdp", (64, 40, 30), (0.5, 0.7, 0.3), batch=8, inputs=70, propagate=True,
                    approx_fields={"batch_slices": 4, "layout": "BLOCK"})
    layers = {layer.name: layer for layer in parse(caffe_pb2, text).layer}
    wiring = {name: (list(layers[name].bottom), list(layers[name].top))
              for name in ("fc1", "fc2", "fc3", "fc4")}
    assert wiring == {"fc1": (["data"], ["fc1", "fc1_pattern"]),
                      "fc2": (["fc1", "fc1_pattern"], ["fc2", "fc2_pattern"]),
                      "fc3": (["fc2", "fc2_pattern"], ["fc3", "fc3_pattern"]),
                      "fc4": (["fc3", "fc3_pattern"], ["fc4"])}
    # the classifier only skips, with the same slices (and layout) as its producer
    enums = caffe_pb2.ApproxDropoutParameter
    fc4 = layers["fc4"]
    assert fc4.type == "ApproxDropoutInnerProduct"
    assert text_format.MessageToString(fc4.approx_dropout_param, as_one_line=True) == \
        "dropout_ratio: 0.0 pattern: ROW side: OUTPUT batch_slices: 4 layout: BLOCK"
    assert [(layer.approx_dropout_param.batch_slices, layer.approx_dropout_param.layout)
            for layer in layers.values() if layer.type == "ApproxDropoutInnerProduct"] == \
        [(4, enums.BLOCK)] * 4
    assert nets.mlp("rdp", propagate=False) == nets.mlp("rdp")


@pytest.mark.parametrize("method", ["rdp_s2", "tdp_s1_rowmajor", "rdp_paper", "rdp",
                                    "rdp_block_s1", "rdp_prop", "rdp_strided_prop_s4",
                                    "dropconnect_tile", "dropconnect_weight_s2", "rdp_input",
                                    "stock_input", "tdp_blocks_s2"])
def test_method_nets_load_with_their_settings(caffe, method, tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(nets.mlp_for_method(method, (64, 40), (0.5, 0.7), batch=8, inputs=70))
    text = path.read_text()
    settings = method_settings(method)
    for name, value in settings.fields.items():
        # every approximate layer, the skipping classifier too
        assert text.count(f"{name}: {value}") == (3 if settings.propagate else 2)
    assert ("pattern_distribution" in text) == settings.paper_distribution
    assert ("fc2_pattern" in text) == settings.propagate
    net = caffe.Net(str(path), caffe.TRAIN)
    net.forward()
    net.backward()
    assert net.blobs["fc1"].data.shape == (8, 64)
    assert np.isfinite(net.blobs["loss"].data).all()


def test_baselines_put_the_noise_on_each_hidden_layers_input():
    """TDP's noise acts on each hidden layer's weights, before its ReLU: the
    baselines drop there (the classifier's input is left alone)."""
    types = {flavour: [(layer.type, list(layer.bottom)) for layer in
                       nets._mlp(flavour, (64, 40), (0.5, 0.7))[0].layer]
             for flavour in nets.BASELINE_FLAVOURS}
    assert types["stock_input"][1:6] == [
        ("Dropout", ["data"]), ("InnerProduct", ["data_dropped"]), ("ReLU", ["fc1"]),
        ("Dropout", ["fc1"]), ("InnerProduct", ["fc1_dropped"])]
    assert ("InnerProduct", ["fc2"]) in types["stock_input"]  # the classifier: no Dropout
    assert [t for t, _ in types["dropconnect"]].count("DropConnectInnerProduct") == 2
    net, _ = nets._mlp("rdp_input", (64, 40), (0.5, 0.7))
    sides = [layer.approx_dropout_param.side for layer in net.layer
             if layer.type == "ApproxDropoutInnerProduct"]
    assert sides == [1, 1]  # INPUT


def small(caffe, flavour, phase, tmp_path):
    path = tmp_path / f"{flavour}.prototxt"
    path.write_text(nets.mlp(flavour, (64, 40), (0.5, 0.7), batch=8, inputs=70))
    return caffe.Net(str(path), phase)


def copy_params(src, dst):
    for name in src.params:
        for a, b in zip(src.params[name], dst.params[name]):
            b.data[...] = a.data


def assert_same_output(stock, approx, feed: dict, start: str, output: str):
    """Same weights and inputs: forward from `start` (DummyData would refill
    its tops on a full forward) and compare `output`."""
    copy_params(stock, approx)
    for net in (stock, approx):
        for blob, value in feed.items():
            net.blobs[blob].data[...] = value
        net.forward(start=start)
    np.testing.assert_allclose(approx.blobs[output].data, stock.blobs[output].data,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("flavour", ["rdp", "tdp"])
def test_test_phase_equals_stock(caffe, flavour, tmp_path):
    caffe.set_mode_cpu()
    stock = small(caffe, "stock", caffe.TEST, tmp_path)
    approx = small(caffe, flavour, caffe.TEST, tmp_path)
    assert list(stock.params) == list(approx.params) == ["fc1", "fc2", "fc3"]
    data = np.random.default_rng(0).uniform(0, 1, (8, 70)).astype(np.float32)
    assert_same_output(stock, approx, {"data": data}, "fc1", "fc3")


def test_rdp_train_drops_whole_neurons(caffe, tmp_path):
    caffe.set_mode_cpu()
    caffe.set_random_seed(3)
    net = small(caffe, "rdp", caffe.TRAIN, tmp_path)
    net.forward()
    fc2 = net.blobs["fc2"].data  # after ReLU; dropped neurons are 0 for all rows
    dead = np.all(fc2 == 0, axis=0)
    assert 0 < dead.mean() < 1
    net.backward()
    # dropped neurons' weights get no gradient
    assert np.all(net.params["fc2"][0].diff[dead] == 0)


def unwired(text: str) -> str:
    """The same net without pattern tops and bottoms."""
    return re.sub(r'\n *(top|bottom): "fc\d+_pattern"', "", text)


def assert_same_numbers(a: caffe_check.Outcome, b: caffe_check.Outcome) -> None:
    """Same losses (every pass) and last parameter gradients, to float
    tolerance: skipping sums fewer zeros, in another order."""
    for outcome in (a, b):
        assert outcome.loaded and outcome.finite, outcome.describe()
    assert len(a.report["outputs"]) == len(b.report["outputs"])
    for step_a, step_b in zip(a.report["outputs"], b.report["outputs"]):
        np.testing.assert_allclose(step_a["loss"], step_b["loss"], rtol=1e-4)
    assert a.report["param_diffs"].keys() == b.report["param_diffs"].keys()
    for name, diff in a.report["param_diffs"].items():
        np.testing.assert_allclose(diff, b.report["param_diffs"][name], rtol=1e-4, atol=1e-6,
                                   err_msg=name)


@pytest.mark.parametrize("layout", ["BLOCK", "STRIDED"])
def test_propagated_mlp_computes_what_the_unwired_one_does(layout):
    """Same seed, same patterns: wiring changes the work, not the numbers."""
    def net(slices: int, propagate: bool) -> str:
        return nets.mlp("rdp", (64, 40), (0.5, 0.7), batch=9, inputs=70, propagate=propagate,
                        approx_fields={"layout": layout, "batch_slices": slices})

    jobs = []
    for slices in (1, 3):
        wired = net(slices, True)
        assert '"fc1_pattern"' in wired and '_pattern"' not in unwired(wired)
        jobs += [caffe_check.Job(wired, iterations=3, seed=7, values=True),
                 caffe_check.Job(unwired(wired), iterations=3, seed=7, values=True)]
    # One pass also equals the net whose classifier is a plain InnerProduct
    # (whatever a skipping classifier draws comes after every other draw).
    jobs += [caffe_check.Job(net(3, True), iterations=1, seed=7, values=True),
             caffe_check.Job(net(3, False), iterations=1, seed=7, values=True)]
    outcomes = caffe_check.check_nets(jobs)
    for wired, plain in zip(outcomes[::2], outcomes[1::2]):
        assert_same_numbers(wired, plain)


def test_propagated_mlp_test_phase_equals_stock(caffe, tmp_path):
    caffe.set_mode_cpu()
    stock = small(caffe, "stock", caffe.TEST, tmp_path)
    path = tmp_path / "propagated.prototxt"
    path.write_text(nets.mlp("rdp", (64, 40), (0.5, 0.7), batch=8, inputs=70, propagate=True))
    approx = caffe.Net(str(path), caffe.TEST)
    assert list(stock.params) == list(approx.params) == ["fc1", "fc2", "fc3"]
    data = np.random.default_rng(0).uniform(0, 1, (8, 70)).astype(np.float32)
    assert_same_output(stock, approx, {"data": data}, "fc1", "fc3")
    # the pattern tops: one row per slice (by default 1 at p = 0.5, 2 at 0.7),
    # dp = 1 and b = 0 in TEST
    pattern = approx.blobs["fc1_pattern"].data
    assert pattern.shape == (1, 4)
    np.testing.assert_array_equal(pattern[:, :2], [[1, 0]])
    np.testing.assert_array_equal(pattern[:, 3], [64])
    pattern = approx.blobs["fc2_pattern"].data
    assert pattern.shape == (2, 4)
    np.testing.assert_array_equal(pattern[:, :2], [[1, 0], [1, 0]])
    np.testing.assert_array_equal(pattern[:, 3], [40, 40])


@pytest.mark.parametrize("variant", [*nets.SINGLE_LAYER_VARIANTS, *nets.STOCK_VARIANTS,
                                     *nets.PAIR_VARIANTS])
def test_layer_pairs_name_their_layout(variant, caffe_pb2):
    text = nets.layer_pair(variant, 64, 0.5, batch=8)
    for layout in ("strided", "block"):
        assert (f"layout: {layout.upper()}" in text) == (
            variant.endswith(layout) or (layout == "block" and variant == "pair_propagated"))
    if variant.startswith("pair"):
        assert [layer.name for layer in parse(caffe_pb2, text).layer][1:] == (
            ["fc1", "relu1", "drop1", "fc2", "relu2", "drop2"] if variant == "pair_stock"
            else ["fc1", "relu1", "fc2", "relu2"])


def test_layer_pairs_load_in_caffe():
    variants = [*nets.SINGLE_LAYER_VARIANTS, *nets.STOCK_VARIANTS, *nets.PAIR_VARIANTS]
    outcomes = caffe_check.check_nets([caffe_check.Job(nets.layer_pair(v, 64, 0.5, batch=8))
                                       for v in variants])
    for variant, outcome in zip(variants, outcomes):
        assert outcome.loaded and outcome.finite, (variant, outcome.describe())
    shapes = dict(zip(variants, (o.report["shapes"] for o in outcomes)))
    assert shapes["pair_propagated"]["fc1_pattern"] == [1, 4]  # p = 0.5: one slice
    assert shapes["pair_propagated"]["fc2"] == shapes["pair_stock"]["fc2"] == [8, 64]


def small_lm(caffe, flavour, phase, tmp_path, rate=0.5, **fields):
    path = tmp_path / f"lm_{flavour}.prototxt"
    path.write_text(nets.lm(flavour, hidden=40, rate=rate, batch=3, steps=4, vocab=50,
                            approx_fields=fields or None))
    return caffe.Net(str(path), phase)


def test_lm_flavours_share_layer_names_and_shapes(caffe, tmp_path):
    caffe.set_mode_cpu()
    nets_ = {f: small_lm(caffe, f, caffe.TEST, tmp_path) for f in nets.LM_FLAVOURS}
    shapes = {f: [(name, [p.data.shape for p in ps]) for name, ps in n.params.items()]
              for f, n in nets_.items()}
    assert shapes["stock"] == shapes["row"] == shapes["tile"]
    assert [name for name, _ in shapes["stock"]] == ["embed", "lstm1", "lstm2", "decoder"]
    with pytest.raises(ValueError, match="flavour must be one of"):
        nets.lm("gru")


@pytest.mark.parametrize("flavour", ["row", "tile"])
def test_lm_test_phase_equals_stock(caffe, flavour, tmp_path):
    caffe.set_mode_cpu()
    stock = small_lm(caffe, "stock", caffe.TEST, tmp_path)
    approx = small_lm(caffe, flavour, caffe.TEST, tmp_path)
    words = np.random.default_rng(0).integers(0, 50, (4, 3))
    assert_same_output(stock, approx, {"words": words, "cont": 1}, "embed", "decoder")


def test_row_lm_drops_the_same_input_features_at_every_time_step(caffe, tmp_path):
    caffe.set_mode_cpu()
    caffe.set_random_seed(5)
    net = small_lm(caffe, "row", caffe.TRAIN, tmp_path, rate=0.7, batch_slices=1,
                   layout="STRIDED")  # kept features b mod dp (BLOCK: one contiguous block)
    seen = []
    for _ in range(5):
        net.forward()
        net.backward()
        grad = net.blobs["embed"].diff  # steps x batch x 40, fed only to lstm1
        dead = np.all(grad == 0, axis=(0, 1))
        assert 0 < dead.mean() < 1
        # one pattern (dp, b) for the whole sequence: every kept feature is
        # live at every step and in every stream, and kept features are b mod dp
        assert np.all(grad[:, :, ~dead] != 0)
        kept = np.flatnonzero(~dead)
        assert len(set(np.diff(kept))) == 1 or len(kept) == 1
        seen.append(tuple(kept))
    assert len(set(seen)) > 1  # a new pattern each iteration


def test_row_lm_slices_are_blocks_of_time_steps(caffe, tmp_path):
    # 4 slices of the 4 x 3 time-major rows: one time step each, one dp for
    # the sequence, the kept offset advancing by one per step
    caffe.set_mode_cpu()
    caffe.set_random_seed(6)
    net = small_lm(caffe, "row", caffe.TRAIN, tmp_path, rate=0.7, batch_slices=4,
                   layout="STRIDED")  # offsets read as strides (BLOCK: contiguous blocks)
    for _ in range(5):
        net.forward()
        net.backward()
        grad = net.blobs["embed"].diff
        first = []
        for t in range(4):
            dead = np.all(grad[t] == 0, axis=0)
            assert np.all(grad[t][:, ~dead] != 0)
            kept = np.flatnonzero(~dead)
            steps = set(np.diff(kept))
            assert len(steps) == 1, kept
            first.append((kept[0], steps.pop()))
        dp = first[0][1]
        assert all(step == dp for _, step in first)
        assert [b for b, _ in first] == [(first[0][0] + t) % dp for t in range(4)]


@pytest.mark.parametrize("flavour", ["row", "tile"])
def test_recurrent_lm_loads_with_lstm_weights(caffe, flavour, tmp_path):
    """Input + recurrent dropout: the LSTMs carry the field, the decoder does not,
    and the parameters keep the stock LM's shapes (weights interchangeable)."""
    caffe.set_mode_cpu()
    text = nets.lm(flavour, hidden=40, batch=3, steps=4, vocab=50, recurrent=0.3,
                   recurrent_pattern="PER_SEQUENCE")
    assert text.count("recurrent_dropout_ratio: 0.3") == 2
    assert text.count("recurrent_pattern: PER_SEQUENCE") == 2
    path = tmp_path / "lm.prototxt"
    path.write_text(text)
    net = caffe.Net(str(path), caffe.TRAIN)
    net.forward()
    stock = small_lm(caffe, "stock", caffe.TRAIN, tmp_path)
    assert [[p.data.shape for p in ps] for ps in net.params.values()] == \
        [[p.data.shape for p in ps] for ps in stock.params.values()]
    with pytest.raises(ValueError, match="recurrent dropout needs flavour row or tile"):
        nets.lm("stock", recurrent=0.5)
