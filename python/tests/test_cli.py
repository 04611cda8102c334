"""The approx-dropout command: output, files written, and bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from approx_dropout import cli, prototxt_io
from approx_dropout.pattern_search import bounded_search
from conftest import REPO

PROTOTXT = REPO / "prototxt"
EXE = Path(sys.executable).with_name("approx-dropout")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


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
    assert "method bounded, p = 0.7, N = 16" in out
    assert "rate              0.700000" in out
    assert "sub-models        12" in out
    assert "compute fraction  0.300000" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("      ")]
    assert [int(r[0]) for r in rows] == [3, 4, 5]


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
    assert len(k) == 2 and list(k[0]) == pytest.approx(
        bounded_search(np.float32(0.7).item(), 16).distribution[:5].tolist(), abs=1e-7)


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
        (["convert", str(rdp), "-o", str(tmp_path / "out.prototxt")],
         "nothing to convert", rdp),
        (["convert", str(garbage), "-o", str(tmp_path / "out.prototxt")],
         "cannot parse", garbage),
    ]


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
