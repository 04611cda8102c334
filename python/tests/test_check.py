"""approx_dropout.check / `approx-dropout check`: a net Caffe cannot set up
raises NetCheckError (Caffe's message, the layer, the phase) in a process
that survives it."""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import approx_dropout
from approx_dropout import cli
from conftest import run_cli
from approx_dropout.harness.check import Outcome
from approx_dropout.prototxt import io as prototxt_io

from approx_dropout import net_check as check_module
EXE = Path(sys.executable).with_name("approx-dropout")

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 6 } } }\n'


def ip(name: str, bottom: str, top: str, num_output: int = 8) -> str:
    return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{top}" '
            f'inner_product_param {{ num_output: {num_output} weight_filler {{ type: "xavier" }} '
            f'}} }}\n')


def mlp(approx_param: str = "dropout_ratio: 0.5", extra: str = "") -> str:
    """data -> fc1 -> fc2 (ApproxDropoutInnerProduct) -> relu2 -> fc3 (+ extra layers)."""
    return ('name: "check_me"\n' + INPUT + ip("fc1", "data", "fc1")
            + 'layer { name: "fc2" type: "ApproxDropoutInnerProduct" bottom: "fc1" top: "fc2" '
              'inner_product_param { num_output: 8 weight_filler { type: "xavier" } } '
              f'approx_dropout_param {{ {approx_param} }} }}\n'
            + 'layer { name: "relu2" type: "ReLU" bottom: "fc2" top: "fc2" }\n'
            + ip("fc3", "fc2", "fc3", 3) + extra)


BAD_RATIO = mlp("dropout_ratio: 1.5")
BAD_SUM = mlp("dropout_ratio: 0.5 pattern_distribution: 0 pattern_distribution: 0.9")


def conv_chain(position: int, length: int = 40) -> str:
    """Input (2x3x5x5), then `length` ReLUs, one of which (at `position`) is a
    Convolution whose kernel (9) is larger than its input: Caffe's message
    (blob.cpp: a negative output size, 5 - 9 + 1) names no layer."""
    text = ('layer { name: "img" type: "Input" top: "b0" input_param { shape { dim: 2 dim: 3 '
            'dim: 5 dim: 5 } } }\n')
    for i in range(length):
        if i == position:
            text += (f'layer {{ name: "conv" type: "Convolution" bottom: "b{i}" top: "b{i + 1}" '
                     f'convolution_param {{ num_output: 2 kernel_size: 9 }} }}\n')
        else:
            text += f'layer {{ name: "relu{i}" type: "ReLU" bottom: "b{i}" top: "b{i + 1}" }}\n'
    return text


def raised(net, *args, **kwargs) -> check_module.NetCheckError:
    with pytest.raises(check_module.NetCheckError) as info:
        approx_dropout.check(net, *args, **kwargs)
    return info.value


# ---- Caffe's own messages, with the layer and the phase ---------------------------

def test_a_bad_dropout_ratio_names_the_layer_and_keeps_caffes_message():
    err = raised(BAD_RATIO)
    assert isinstance(err, ValueError)
    assert (err.layer, err.phase) == ("fc2", "TRAIN")
    assert "dropout_ratio must be in [0, 1), got 1.5" in err.message
    assert err.message.startswith("ratio_ < 1.f")  # the text after "Check failed: "
    assert err.check.startswith("F") and "] Check failed: " in err.check
    assert err.check.endswith(err.message)          # the full line, glog prefix and all
    assert str(err) == f"layer 'fc2' (TRAIN): {err.message}"


def test_a_distribution_that_does_not_sum_to_one_names_the_layer():
    err = raised(BAD_SUM)
    assert (err.layer, err.phase) == ("fc2", "TRAIN")
    assert "pattern_distribution sums to 0.9, not 1" in err.message


@pytest.mark.parametrize("position", [0, 17, 39])  # first, past one round of probes, last
def test_a_stock_layer_error_is_found_by_setting_up_prefixes(position):
    err = raised(conv_chain(position))
    assert err.layer == "conv"
    assert err.message == "shape[i] >= 0 (-3 vs. 0)"
    assert "blob.cpp" in err.check


def test_the_prefix_search_takes_several_rounds(monkeypatch):
    monkeypatch.setattr(check_module, "_PROBES", 2)  # 3-ary: 40 layers need 4 rounds
    rounds = []
    run = check_module._run
    monkeypatch.setattr(check_module, "_run", lambda nets, t: rounds.append(len(nets))
                        or run(nets, t))
    assert raised(conv_chain(23)).layer == "conv"
    assert len(rounds) >= 4 and rounds[0] == 2  # the two phases, then the probes


def test_a_message_naming_its_layer_needs_no_search(monkeypatch):
    def no_search(*args):
        raise AssertionError("searched although Caffe's message names the layer")
    monkeypatch.setattr(check_module, "_locate", no_search)
    assert raised(BAD_RATIO).layer == "fc2"  # "... Layer fc2: approx_dropout_param..."


@pytest.mark.parametrize("same", [True, False])
def test_a_prefix_failing_with_another_message_names_no_layer(monkeypatch, caffe_pb2, same):
    """The search trusts a prefix only if it fails as the whole net did."""
    net = caffe_pb2.NetParameter()
    for i in range(10):
        net.layer.add(name=f"l{i}", type="ReLU")
    fatal = "F20261201 14:12:13.123456 1 x.cpp:1] Check failed: {}\n"
    def fake_run(nets, timeout):  # prefixes of 7 layers or more fail
        return [Outcome(None, 6, fatal.format("whole" if same else "part"))
                if text.count("layer {") >= 7 else Outcome(0, None, "", {"shapes": {}})
                for text, _ in nets]
    monkeypatch.setattr(check_module, "_run", fake_run)
    assert check_module._locate(net, "TRAIN", "whole", 60) == ("l6" if same else None)


def test_an_unknown_bottom_is_reported_at_its_layer():
    text = INPUT + ip("fc1", "data", "fc1") + ip("ip", "nope", "x") + ip("fc3", "fc1", "y")
    err = raised(text, "TEST")
    assert (err.layer, err.phase) == ("ip", "TEST")
    assert err.message == "Unknown bottom blob 'nope' (layer 'ip', bottom index 0)"


def test_a_good_net_passes_in_both_phases():
    good = mlp(extra='layer { name: "loss" type: "Reduction" bottom: "fc3" top: "loss" '
                     'include { phase: TRAIN } }\n')
    assert approx_dropout.check(good) is None
    assert approx_dropout.check(good, "TEST") is None
    assert approx_dropout.check(conv_chain(position=-1)) is None


# fc3 is 4 x 3: 12 values cannot be 5 x N (Caffe's message names no layer)
BAD_RESHAPE = ('layer {{ name: "{name}" type: "Reshape" bottom: "fc3" top: "{name}" '
               'include {{ phase: TEST }} reshape_param {{ shape {{ dim: 5 dim: -1 }} }} }}\n')


def test_a_failure_in_one_phase_only_is_reported_with_that_phase():
    bad_in_test = mlp(extra='layer { name: "train_only" type: "ReLU" bottom: "fc3" top: "t" '
                            'include { phase: TRAIN } }\n'
                      + BAD_RESHAPE.format(name="test_reshape")
                      + 'layer { name: "after" type: "ReLU" bottom: "fc3" top: "u" }\n')
    assert approx_dropout.check(bad_in_test, ["TRAIN"]) is None
    err = raised(bad_in_test)
    assert (err.layer, err.phase) == ("test_reshape", "TEST")
    assert "must be divisible by the product of the specified dimensions (5)" in err.message
    assert str(err).startswith("layer 'test_reshape' (TEST): ")


def test_the_first_failing_phase_in_the_order_given_is_raised():
    assert raised(BAD_RATIO, ("TEST", "TRAIN")).phase == "TEST"
    assert raised(BAD_RATIO, [1]).phase == "TEST"   # caffe.TEST
    assert raised(BAD_RATIO, "train").phase == "TRAIN"


def test_the_calling_process_survives_what_kills_a_plain_caffe_net(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text(BAD_RATIO)
    direct = subprocess.run(
        [sys.executable, "-c", "from approx_dropout import caffe_env\n"
                               "caffe = caffe_env.import_caffe()\n"
                               f"caffe.Net({str(path)!r}, caffe.TRAIN)\nprint('alive')"],
        capture_output=True, text=True)
    assert direct.returncode == -signal.SIGABRT and "alive" not in direct.stdout
    assert "dropout_ratio must be in [0, 1)" in direct.stderr
    pid = os.getpid()
    for _ in range(3):
        assert raised(path).layer == "fc2"
    assert os.getpid() == pid  # and this test is still running


# ---- what check() accepts ---------------------------------------------------------

@pytest.mark.parametrize("kind", ["str path", "Path", "text", "NetParameter"])
def test_paths_text_and_net_parameters_are_accepted(kind, tmp_path, caffe_pb2):
    def as_kind(text: str, name: str):
        path = tmp_path / f"{name}.prototxt"
        path.write_text(text)
        if kind == "str path":
            return str(path)
        if kind == "Path":
            return path
        if kind == "text":
            return text
        return prototxt_io.read_net(path)

    good = as_kind(mlp(), "good")
    bad = as_kind(BAD_SUM, "bad")
    before = bad.SerializeToString() if kind == "NetParameter" else None
    assert approx_dropout.check(good) is None
    err = raised(bad)
    assert (err.layer, err.phase) == ("fc2", "TRAIN") and "sums to 0.9" in err.message
    if before is not None:
        assert bad.SerializeToString() == before  # the caller's message is not modified


def test_unreadable_and_unparsable_nets_raise_net_check_error(tmp_path):
    err = raised('layer { name: "x" type: "ReLU" bottom: }')
    assert err.layer is None and err.phase is None and err.check == ""
    assert str(err).startswith("cannot parse the text as a Caffe net: ")
    err = raised("no/such/net.prototxt")
    assert str(err).startswith("no such file: 'no/such/net.prototxt'")
    err = raised(tmp_path / "missing.prototxt")  # a Path is always a path
    assert "cannot read" in str(err) and "No such file" in str(err)
    v1 = tmp_path / "v1.prototxt"
    v1.write_text('layers { name: "r" type: RELU bottom: "a" top: "a" }\n')
    assert "V1 'layers' format" in str(raised(v1))
    assert "V1 'layers' format" in str(raised(v1.read_text()))


def test_wrong_arguments_are_plain_errors():
    with pytest.raises(TypeError, match="not int"):
        approx_dropout.check(42)
    with pytest.raises(ValueError, match="phase must be") as info:
        approx_dropout.check(mlp(), "VALIDATE")
    assert not isinstance(info.value, check_module.NetCheckError)
    with pytest.raises(ValueError, match="timeout"):
        approx_dropout.check(mlp(), timeout=0)


def test_a_net_that_hangs_is_killed_after_the_timeout(tmp_path):
    fifo = tmp_path / "list.txt"
    os.mkfifo(fifo)  # HDF5Data opens its list file: blocks forever, nobody writes
    text = (f'layer {{ name: "data" type: "HDF5Data" top: "data" hdf5_data_param {{ '
            f'source: "{fifo}" batch_size: 2 }} }}\n')
    start = time.monotonic()
    err = raised(text, "TRAIN", timeout=2)
    assert time.monotonic() - start < 30
    assert err.phase == "TRAIN" and err.layer is None
    assert err.message == ("Caffe did not finish setting the net up within 2 s "
                           "(the child was killed)")


def test_the_error_pickles():
    err = check_module.NetCheckError("m", layer="fc2", phase="TEST", check="F... m")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.message, copy.layer, copy.phase, copy.check, str(copy)) == \
        ("m", "fc2", "TEST", "F... m", "layer 'fc2' (TEST): m")
    assert str(check_module.NetCheckError("m", phase="TRAIN")) == "TRAIN: m"


def test_glog_lines_of_either_format_are_read():
    old = ("WARNING: Logging before InitGoogleLogging() is written to STDERR\n"
           "F1201 14:12:13.123456  1234 layer.cpp:56] Unknown layer type: Foo (known types: "
           "A, B)\n*** Check failure stack trace: ***\n    @ 0x7f google::LogMessage::Fail()\n")
    message, line = check_module._failure(Outcome(None, 6, old), 60)
    assert message == "Unknown layer type: Foo (known types: A, B)"
    assert line.startswith("F1201 14:12:13.123456  1234 layer.cpp:56] Unknown")
    new = "F20261201 14:12:13.123456 1234 blob.cpp:32] Check failed: x > 0 (0 vs. 0) \n"
    assert check_module._failure(Outcome(None, 6, new), 60)[0] == "x > 0 (0 vs. 0)"
    assert check_module._failure(Outcome(None, 11, "boom\n"), 60)[0] == \
        "Caffe died with signal 11 (SIGSEGV): boom"


# ---- data_as_inputs -------------------------------------------------------------------

def data_net(tmp_path: Path, crop: bool = True) -> str:
    transform = "crop_size: 6 " if crop else ""
    def data(phase: str, batch: int) -> str:
        return (f'layer {{ name: "data_{phase.lower()}" type: "Data" top: "data" top: "label" '
                f'include {{ phase: {phase} }} transform_param {{ {transform}mean_value: 0 }} '
                f'data_param {{ source: "{tmp_path / "no_such_lmdb"}" batch_size: {batch} '
                f'backend: LMDB }} }}\n')
    return (data("TRAIN", 4) + data("TEST", 2)
            + 'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
              'convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "xavier" } '
              '} }\n'
            + ip("fc", "conv", "fc", 5)
            + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" '
              'top: "loss" }\n')


def test_data_as_inputs_checks_a_net_whose_database_is_missing(tmp_path):
    text = data_net(tmp_path)
    err = raised(text)  # Caffe itself fails to open the database
    assert (err.layer, err.phase) == ("data_train", "TRAIN")
    assert approx_dropout.check(text, data_as_inputs=True) is None
    bad = text.replace("kernel_size: 3", "kernel_size: 7")  # larger than the 6 x 6 crop
    err = raised(bad, "TEST", data_as_inputs=True)
    assert (err.layer, err.phase) == ("conv", "TEST")


def test_data_as_inputs_names_a_data_layer_whose_shape_is_unknown(tmp_path):
    err = raised(data_net(tmp_path, crop=False), ("TEST",), data_as_inputs=True)
    assert (err.layer, err.phase) == ("data_test", "TEST")
    assert "data_test" in err.message and err.check == ""


# ---- the package and the command -------------------------------------------------------

def test_the_package_exports_check_lazily():
    code = ("import sys, approx_dropout\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('caffe', 'caffe_pb2', 'google') or m == 'approx_dropout.net_check'))\n"
            "from approx_dropout.net_check import NetCheckError\n"  # loads the submodule first
            "print(approx_dropout.check.__module__, approx_dropout.check.__name__, "
            "approx_dropout.NetCheckError is NetCheckError, "
            "issubclass(NetCheckError, ValueError))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[]", "approx_dropout.net_check check True True"]


run = run_cli  # approx-dropout in-process (conftest)


def test_cli_reports_each_net_and_exits_1_if_any_fails(capsys, tmp_path):
    good, bad, test_only = (tmp_path / f"{n}.prototxt" for n in ("good", "bad", "test_only"))
    good.write_text(mlp())
    bad.write_text(BAD_RATIO)
    test_only.write_text(mlp(extra=BAD_RESHAPE.format(name="r")))
    code, out, err = run(capsys, "check", str(good), str(test_only))
    assert code == 1
    assert out == f"{good}: ok\n"
    assert err.startswith(f"approx-dropout check: {test_only}: layer 'r' (TEST): ")
    assert err.endswith("(5)\n") and err.count("\n") == 1
    code, out, err = run(capsys, "check", str(good), str(test_only), "--phase", "TRAIN")
    assert (code, out, err) == (0, f"{good}: ok\n{test_only}: ok\n", "")
    code, out, err = run(capsys, "check", str(bad), str(tmp_path / "missing.prototxt"))
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert lines[0].startswith(f"approx-dropout check: {bad}: layer 'fc2' (TRAIN): ")
    assert lines[0].endswith("dropout_ratio must be in [0, 1), got 1.5")
    assert lines[1].startswith(f"approx-dropout check: {tmp_path / 'missing.prototxt'}: "
                               f"cannot read")
    assert len(lines) == 2


def test_cli_data_as_inputs_and_usage_errors(capsys, tmp_path):
    net = tmp_path / "data.prototxt"
    net.write_text(data_net(tmp_path))
    assert run(capsys, "check", str(net))[0] == 1
    assert run(capsys, "check", str(net), "--data-as-inputs") == (0, f"{net}: ok\n", "")
    code, out, err = run(capsys, "check", str(net), "--phase", "VAL")
    assert code == 2 and "invalid choice" in err
    assert run(capsys, "check")[0] == 2


def test_the_console_script_has_check():
    res = subprocess.run([str(EXE), "check", "--help"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "usage: approx-dropout check" in res.stdout and "--data-as-inputs" in res.stdout
