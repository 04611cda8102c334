"""The approx-dropout command: output, files written, and bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from approx_dropout import cli
from approx_dropout.patterns.search import bounded_search
from approx_dropout.prototxt import io as prototxt_io
from approx_dropout.prototxt import rules
from conftest import REPO, run_cli

PROTOTXT = REPO / "prototxt"
EXE = Path(sys.executable).with_name("approx-dropout")


run = run_cli  # approx-dropout in-process (conftest)


@pytest.fixture
def rdp(tmp_path) -> Path:
    path = tmp_path / "rdp.prototxt"
    shutil.copy(PROTOTXT / "mlp_bench_rdp.prototxt", path)
    return path


def test_console_script_is_installed_and_every_command_has_help():
    for args in ([], ["search"], ["apply"], ["convert"]):
        res = subprocess.run([str(EXE), *args, "--help"], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert "usage: approx-dropout" in res.stdout


def test_search_text(capsys):
    code, out, err = run(capsys, "search", "--rate", "0.7", "--max-dp", "16")
    assert code == 0 and err == ""
    want = bounded_search(0.7, 16)  # the CLI's defaults are the layers' (and the search's)
    assert "method bounded, p = 0.7, N = 16" in out
    assert "rate              0.700000" in out
    assert f"sub-models        {want.sub_models:<8d}" in out
    assert "compute fraction  0.300000" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("      ")]
    assert [int(r[0]) for r in rows] == [dp for dp, k in want.support() if k >= cli.LISTING_FLOOR]


def test_search_json_paper_warns_on_stderr(capsys):
    code, out, err = run(capsys, "search", "--rate", "0.5", "--max-dp", "2048",
                         "--method", "paper", "--json")
    assert code == 0
    data = json.loads(out)
    assert len(data["distribution"]) == 2048
    assert data["no_dropout"] == pytest.approx(0.498, abs=0.002)
    assert "warning: bimodal" in err


def test_apply_in_place_keeps_a_backup(capsys, rdp):
    original = rdp.read_bytes()
    code, out, err = run(capsys, "apply", str(rdp))
    assert code == 0, err
    assert out.splitlines()[0].startswith("fc1: dropout_ratio 0.7, bounded, dp <= 16: rate 0.700000")
    assert "comments and formatting" in err and "rdp.prototxt.bak" in err
    assert (rdp.parent / "rdp.prototxt.bak").read_bytes() == original
    net = prototxt_io.read_net(rdp)
    k = [layer.approx_dropout_param.pattern_distribution for layer in net.layer
         if layer.type == "ApproxDropoutInnerProduct"]
    want = rules.trim(bounded_search(np.float32(0.7).item(), 16).distribution)
    assert len(k) == 2 and list(k[0]) == pytest.approx(want, abs=1e-7)


def test_apply_to_output(capsys, rdp, tmp_path):
    original = rdp.read_bytes()
    out_path = tmp_path / "out.prototxt"
    code, _, err = run(capsys, "apply", str(rdp), "--layer", "fc2", "-o", str(out_path))
    assert code == 0, err
    assert rdp.read_bytes() == original and not (tmp_path / "rdp.prototxt.bak").exists()
    assert out_path.read_text().startswith("# pattern_distribution filled by: approx-dropout")


def test_convert(capsys, tmp_path):
    out_path = tmp_path / "conv.prototxt"
    code, out, err = run(capsys, "convert", str(PROTOTXT / "mlp_bench_stock.prototxt"),
                         "-o", str(out_path), "--pattern", "TILE")
    assert code == 0, err
    assert out.startswith("converted fc1 -> relu1 -> drop1: fc1: dropout_ratio 0.7")
    net = prototxt_io.read_net(out_path)
    assert [layer.type for layer in net.layer].count("ApproxDropoutInnerProduct") == 2
    assert "Dropout" not in [layer.type for layer in net.layer]


def test_convert_wires_patterns(capsys, tmp_path):
    out_path = tmp_path / "conv.prototxt"
    source = str(PROTOTXT / "mlp_bench_stock.prototxt")
    code, out, err = run(capsys, "convert", source, "-o", str(out_path))
    assert code == 0, err
    assert out.splitlines()[2] == "wired fc1 -> fc2 (pattern fc1_pattern)"
    assert "note: fc3, a plain InnerProduct reading fc2's output, could skip the inputs " \
        "fc2 drops: --propagate all" in err
    text = out_path.read_text()
    assert text.startswith("# Converted by: approx-dropout convert mlp_bench_stock.prototxt "
                           "--pattern ROW --propagate converted --method bounded\n")
    assert text.count('"fc1_pattern"') == 2
    code, out, err = run(capsys, "convert", source, "-o", str(out_path), "--propagate", "all")
    assert code == 0, err
    assert out.splitlines()[3] == ("wired fc2 -> fc3 (pattern fc2_pattern); fc3 is now an "
                                   "ApproxDropoutInnerProduct with dropout_ratio 0 that only "
                                   "skips")
    assert "note:" not in err.replace("note: comments", "")
    net = prototxt_io.read_net(out_path)
    assert [layer.type for layer in net.layer].count("ApproxDropoutInnerProduct") == 3
    code, out, err = run(capsys, "convert", source, "-o", str(out_path), "--propagate", "off")
    assert code == 0, err
    assert "wired" not in out and "_pattern" not in out_path.read_text()


def test_convert_reports_pairs_it_does_not_wire(capsys, tmp_path, caffe_pb2):
    stock = prototxt_io.read_net(PROTOTXT / "mlp_bench_stock.prototxt")
    squashed = caffe_pb2.NetParameter(name=stock.name)
    for layer in stock.layer:
        squashed.layer.add().CopyFrom(layer)
        if layer.name == "drop1":
            squashed.layer.add(name="squash", type="Sigmoid", bottom=["fc1"], top=["fc1"])
    net = tmp_path / "net.prototxt"
    net.write_text(prototxt_io.net_to_text(squashed))
    assert "squash" in net.read_text()
    code, out, err = run(capsys, "convert", str(net), "-o", str(tmp_path / "out.prototxt"))
    assert code == 0, err
    assert "wired" not in out
    assert ("approx-dropout: not wired: fc1 -> fc2: ReLU layer 'relu1', Sigmoid layer "
            "'squash' sit between them; only one ReLU may") in err


# ---- bad input: non-zero exit, one line on stderr, input unchanged -----------

@pytest.mark.parametrize("argv,code,message", [
    (["search", "--rate", "1.0"], 2, "argument --rate: must be in [0, 1), got 1.0"),
    (["search", "--rate", "-0.1"], 2, "argument --rate: must be in [0, 1), got -0.1"),
    (["search", "--rate", "nan"], 2, "argument --rate: must be in [0, 1), got nan"),
    (["search", "--rate", "x"], 2, "argument --rate: not a number: 'x'"),
    (["search", "--rate", "0.5", "--max-dp", "0"], 2, "argument --max-dp: must be at least 1"),
    (["search", "--rate", "0.8", "--max-dp", "4"], 1,
     "dropout rate 0.8 cannot be reached with dp <= 4"),
    (["search", "--rate", "0.5", "--method", "paper", "--lambda1", "2"], 1,
     "lambda1 must be in [0, 1]"),
    (["convert", "x.prototxt"], 2, "the following arguments are required: -o/--output"),
    (["convert", "x.prototxt", "-o", "y", "--propagate", "some"], 2,
     "argument --propagate: invalid choice: 'some'"),
])
def test_bad_arguments(capsys, argv, code, message):
    got, out, err = run(capsys, *argv)
    assert got == code
    assert message in err
    assert len(err.strip().splitlines()) == 1, err


def bad_file_cases(tmp_path: Path, rdp: Path) -> list[tuple[list[str], str, Path]]:
    garbage = tmp_path / "garbage.prototxt"
    garbage.write_text('layer { name: "fc" type: "InnerProduct" nonsense: 3 }\n')
    v1 = tmp_path / "v1.prototxt"
    v1.write_text('layers { name: "fc" type: INNER_PRODUCT }\n')
    binary = tmp_path / "binary.prototxt"
    binary.write_bytes(b"\xff\xfe\x00layer")
    stock = tmp_path / "stock.prototxt"
    shutil.copy(PROTOTXT / "mlp_bench_stock.prototxt", stock)
    plain = tmp_path / "plain.prototxt"  # neither Dropout nor approximate layers
    plain.write_text(stock.read_text().replace('type: "Dropout"', 'type: "ReLU"'))
    low = tmp_path / "low.prototxt"
    low.write_text(rdp.read_text().replace("dropout_ratio: 0.7", "dropout_ratio: 0.3"))
    return [
        (["apply", str(tmp_path / "missing.prototxt")], "cannot read", None),
        (["apply", str(garbage)], 'has no field named "nonsense"', garbage),
        (["apply", str(binary)], "cannot read", binary),
        (["apply", str(v1)], "deprecated V1 'layers' format", v1),
        (["apply", str(rdp), "--layer", "fc9"], "no layer named 'fc9'", rdp),
        (["apply", str(rdp), "--layer", "relu1"], "is of type ReLU", rdp),
        (["apply", str(stock)], "has no ApproxDropoutInnerProduct", stock),
        (["apply", str(low), "--method", "paper"], "reached rate 0.3132", low),
        (["apply", str(rdp), "-o", str(tmp_path / "no/such/dir/out.prototxt")],
         "cannot write", rdp),
        (["apply", str(rdp), "-o", str(tmp_path)], "is a directory", rdp),
        (["convert", str(plain), "-o", str(tmp_path / "out.prototxt")],
         "has no Dropout layer: nothing to convert", plain),
        (["convert", str(garbage), "-o", str(tmp_path / "out.prototxt")],
         "cannot parse", garbage),
    ]


def test_convert_an_already_converted_net_is_not_an_error(capsys, tmp_path, rdp):
    """Scripts may convert unconditionally: exit 0 with one clear line; -o gets
    a copy, in place nothing is written."""
    original = rdp.read_bytes()
    out = tmp_path / "again.prototxt"
    code, stdout, err = run(capsys, "convert", str(rdp), "-o", str(out))
    assert code == 0, err
    assert "is already converted (fc1, fc2" in stdout and f"{out} is a copy" in stdout
    assert prototxt_io.read_net(out) == prototxt_io.read_net(rdp)
    code, stdout, err = run(capsys, "convert", str(rdp), "-o", str(rdp))
    assert code == 0, err
    assert "nothing to do, nothing written" in stdout
    assert rdp.read_bytes() == original and not (tmp_path / "rdp.prototxt.bak").exists()


def test_convert_when_every_dropout_is_refused(capsys, tmp_path):
    refused = tmp_path / "refused.prototxt"  # phase rules: refused with the reason
    refused.write_text((PROTOTXT / "mlp_bench_stock.prototxt").read_text().replace(
        'type: "Dropout"', 'type: "Dropout" include { phase: TRAIN }'))
    code, _, err = run(capsys, "convert", str(refused), "-o", str(tmp_path / "out.prototxt"))
    assert code == 1
    lines = err.strip().splitlines()
    assert [line.split(":")[2].strip() for line in lines[:2]] == ["drop1", "drop2"]
    assert "include/exclude phase rules" in lines[0]
    assert lines[-1].endswith("none of its Dropout layers qualifies (reasons above); "
                              "nothing written")
    assert not (tmp_path / "out.prototxt").exists()


def test_apply_reports_the_distribution_it_replaces(capsys, tmp_path, rdp):
    bad = tmp_path / "bad.prototxt"
    net = prototxt_io.read_net(rdp)
    fc1 = [x for x in net.layer if x.name == "fc1"][0].approx_dropout_param
    del fc1.pattern_distribution[:]
    fc1.pattern_distribution.extend([0.5, 0.4])  # sums to 0.9: Caffe refuses it
    bad.write_text(prototxt_io.net_to_text(net))
    code, _, err = run(capsys, "apply", str(bad))
    assert code == 0, err
    assert "fc1: replaced an invalid pattern_distribution [0.5, 0.4]: it sums to 0.9" in err
    assert abs(sum(distribution_of(bad, "fc1")) - 1) < 1e-6
    code, _, err = run(capsys, "apply", str(bad))  # now valid ones: a note each
    assert code == 0 and "warning" not in err, err
    assert "note: fc1: replaced pattern_distribution [" in err


def test_apply_on_a_stock_net_suggests_convert(capsys, tmp_path):
    stock = tmp_path / "stock.prototxt"
    shutil.copy(PROTOTXT / "mlp_bench_stock.prototxt", stock)
    code, _, err = run(capsys, "apply", str(stock))
    assert code == 1
    assert "it has Dropout layers (drop1, drop2): `approx-dropout convert NET -o OUT`" in err


def test_bad_files_fail_cleanly_and_change_nothing(capsys, tmp_path, rdp):
    for argv, message, source in bad_file_cases(tmp_path, rdp):
        before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
        code, out, err = run(capsys, *argv)
        assert code == 1, (argv, err)
        assert message in err, (argv, err)
        assert err.startswith(f"approx-dropout {argv[0]}: error: ")
        assert len(err.strip().splitlines()) == 1, (argv, err)
        after = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
        assert after == before, argv  # input byte-for-byte, and no new files
        if source is not None:
            assert source.exists()


# ---- in-place rewrites: links, permissions, concurrent writers ---------------

def distribution_of(path: Path, layer: str) -> list[float]:
    net = prototxt_io.read_net(path)
    (found,) = [x for x in net.layer if x.name == layer]
    return list(found.approx_dropout_param.pattern_distribution)


def test_apply_through_a_symlink_rewrites_the_file_it_points_to(capsys, rdp, tmp_path):
    original = rdp.read_bytes()
    link = tmp_path / "link.prototxt"
    link.symlink_to(rdp)
    code, _, err = run(capsys, "apply", str(link))
    assert code == 0, err
    assert link.is_symlink() and link.resolve() == rdp  # still the same link
    assert distribution_of(rdp, "fc1")  # the real file got the update
    assert (tmp_path / "rdp.prototxt.bak").read_bytes() == original
    # and -o through a link: the link's target is written, the link stays
    out = tmp_path / "out.prototxt"
    out.write_text("# placeholder\n")
    out_link = tmp_path / "out-link.prototxt"
    out_link.symlink_to(out)
    code, _, err = run(capsys, "apply", str(rdp), "-o", str(out_link))
    assert code == 0, err
    assert out_link.is_symlink() and distribution_of(out, "fc2")


def test_in_place_rewrite_keeps_the_permissions(capsys, rdp):
    rdp.chmod(0o640)
    code, _, err = run(capsys, "apply", str(rdp))
    assert code == 0, err
    assert (rdp.stat().st_mode & 0o777) == 0o640
    assert distribution_of(rdp, "fc1")


@pytest.mark.parametrize("in_place", [True, False])
def test_read_only_target_is_refused_and_left_alone(capsys, rdp, tmp_path, in_place):
    target = rdp if in_place else tmp_path / "out.prototxt"
    if not in_place:
        target.write_text("# someone's file\n")
    target.chmod(0o444)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    argv = ["apply", str(rdp)] + ([] if in_place else ["-o", str(target)])
    code, out, err = run(capsys, *argv)
    assert code == 1
    assert err == f"approx-dropout apply: error: cannot write {target}: it is read-only " \
                  f"(mode 0444); nothing written\n"
    assert out == ""  # refused before any work
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert (target.stat().st_mode & 0o777) == 0o444


def test_convert_in_place_through_the_same_path(capsys, tmp_path):
    stock = tmp_path / "stock.prototxt"
    shutil.copy(PROTOTXT / "mlp_bench_stock.prototxt", stock)
    original = stock.read_bytes()
    code, _, err = run(capsys, "convert", str(stock), "-o", str(stock))
    assert code == 0, err
    assert (tmp_path / "stock.prototxt.bak").read_bytes() == original
    assert "ApproxDropoutInnerProduct" in stock.read_text()


def test_a_net_changed_during_the_rewrite_is_not_replaced(capsys, rdp, monkeypatch):
    """Another program (which takes no lock) writes NET while apply works."""
    theirs = rdp.read_text().replace("dropout_ratio: 0.7", "dropout_ratio: 0.5")
    real_fill = cli.fill_distributions

    def fill_while_someone_edits(*args, **kwargs):
        rdp.write_text(theirs)
        return real_fill(*args, **kwargs)
    monkeypatch.setattr(cli, "fill_distributions", fill_while_someone_edits)
    code, _, err = run(capsys, "apply", str(rdp))
    assert code == 1
    assert "changed while it was being rewritten" in err and "nothing written" in err
    assert len(err.strip().splitlines()) == 1
    assert rdp.read_text() == theirs  # their update is kept
    assert sorted(p.name for p in rdp.parent.iterdir()) == ["rdp.prototxt"]  # no backup, temp, lock


CONCURRENT_CHILD = """
import sys, time
from pathlib import Path
from approx_dropout import cli

meet, me = Path(sys.argv[1]), sys.argv[2]
read = cli.read_net_file

def read_then_meet(path):
    # Both runs wait here after reading, so that without a lock both would
    # rewrite the same original; a run that cannot read yet (locked out)
    # makes the other give up waiting after 2 s.
    result = read(path)
    (meet / me).touch()
    deadline = time.monotonic() + 2
    while len(list(meet.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    return result

cli.read_net_file = read_then_meet
sys.exit(cli.main(sys.argv[3:]))
"""


def test_two_concurrent_applies_to_different_layers_lose_no_update(rdp, tmp_path):
    original = rdp.read_bytes()
    meet = tmp_path / "meet"
    meet.mkdir()
    procs = {layer: subprocess.Popen(
        [sys.executable, "-c", CONCURRENT_CHILD, str(meet), layer, "apply", str(rdp),
         "--layer", layer], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for layer in ("fc1", "fc2")}
    results = {layer: (p.wait(timeout=120), p.stdout.read(), p.stderr.read())
               for layer, p in procs.items()}
    for layer, (code, out, err) in results.items():
        # never a silent loss: a run that reports success has its update in the file
        if code == 0:
            assert distribution_of(rdp, layer), (layer, err)
        else:
            assert code == 1 and "approx-dropout apply: error: " in err, err
    # with the lock, the second run waits for the first and both succeed
    assert [r[0] for r in results.values()] == [0, 0], results
    backups = sorted(p.name for p in tmp_path.iterdir() if ".bak" in p.name)
    assert backups == ["rdp.prototxt.bak", "rdp.prototxt.bak1"]  # one each, none shared
    assert original in {(tmp_path / b).read_bytes() for b in backups}
    assert not list(tmp_path.glob(".rdp.prototxt*"))  # no lock or temporary left


def test_apply_asks_for_max_dp_when_the_input_size_is_unknown(capsys, tmp_path):
    net = tmp_path / "h5.prototxt"
    net.write_text('layer { name: "data" type: "HDF5Data" top: "data" '
                   'hdf5_data_param { source: "no-such-list.txt" batch_size: 4 } }\n'
                   'layer { name: "fc" type: "ApproxDropoutInnerProduct" bottom: "data" top: "y" '
                   'inner_product_param { num_output: 64 } '
                   'approx_dropout_param { dropout_ratio: 0.5 side: INPUT } }\n')
    before = net.read_bytes()
    code, out, err = run(capsys, "apply", str(net))
    assert code == 1 and net.read_bytes() == before
    assert len(err.strip().splitlines()) == 1
    assert "layer fc: dp must not exceed its input size K" in err and "pass --max-dp N" in err
    code, out, err = run(capsys, "apply", str(net), "--max-dp", "4")
    assert code == 0, err
    assert distribution_of(net, "fc") and "--max-dp 4" in net.read_text().splitlines()[0]


def test_convert_and_apply_write_nothing_caffe_refuses(capsys, tmp_path, monkeypatch):
    """The result is set up in Caffe (a child process) before it is written: a
    result Caffe refuses (here: a converter that wrote dropout_ratio 1.5) is
    not written; a net Caffe refused before the rewrite is written with a note."""
    stock = tmp_path / "stock.prototxt"
    shutil.copy(PROTOTXT / "mlp_bench_stock.prototxt", stock)
    out = tmp_path / "out.prototxt"
    real_convert = cli.convert_net

    def bad_convert(*args, **kwargs):
        converted, report = real_convert(*args, **kwargs)
        converted.layer[1].approx_dropout_param.dropout_ratio = 1.5
        return converted, report
    with monkeypatch.context() as patched:
        patched.setattr(cli, "convert_net", bad_convert)
        code, _, err = run(capsys, "convert", str(stock), "-o", str(out))
        assert code == 1 and not out.exists()
        assert "Caffe refuses the result, so nothing was written: layer 'fc1' (TRAIN)" in err
        assert "dropout_ratio must be in [0, 1)" in err
        code, _, err = run(capsys, "convert", str(stock), "-o", str(out), "--no-check")
        assert code == 0 and out.exists(), err
    broken = tmp_path / "broken.prototxt"  # three param specs for two blobs
    broken.write_text(stock.read_text() + (
        'layer { name: "extra" type: "InnerProduct" bottom: "data" top: "extra" '
        'param { lr_mult: 1 } param { lr_mult: 1 } param { lr_mult: 1 } '
        'inner_product_param { num_output: 2 } }\n'))
    code, _, err = run(capsys, "convert", str(broken), "-o", str(out))
    assert code == 0, err
    assert "note: not set up in Caffe before writing: the original net fails too: " \
           "layer 'extra' (TRAIN)" in err


def test_a_net_whose_shapes_are_unknown_is_written_unchecked_with_a_note(capsys, tmp_path):
    net = tmp_path / "hdf5.prototxt"
    net.write_text((PROTOTXT / "mlp_bench_stock.prototxt").read_text().replace(
        'type: "DummyData"', 'type: "HDF5Data" hdf5_data_param { source: "missing.txt" '
                             'batch_size: 4 }', 1))
    code, _, err = run(capsys, "convert", str(net), "-o", str(tmp_path / "out.prototxt"))
    assert code == 0, err
    assert "note: not set up in Caffe before writing: data layer 'data'" in err
