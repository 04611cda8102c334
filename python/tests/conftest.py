"""Shared fixtures: the project's build of pycaffe and a pristine Caffe tree."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

from approx_dropout import caffe_env

REPO = Path(__file__).resolve().parents[2]  # the checkout these tests belong to

# Property tests draw the same examples on every run (CI must not flake) and
# keep no example database in the checkout.
settings.register_profile("deterministic", derandomize=True, database=None)
settings.load_profile("deterministic")


@pytest.fixture(scope="session")
def caffe_pb2():
    return caffe_env.import_caffe_pb2()


@pytest.fixture(scope="session")
def caffe():
    return caffe_env.import_caffe()


@pytest.fixture(scope="session")
def sdist_archive_tree(tmp_path_factory) -> Path:
    """The pinned sdist, unpacked from the verified download cache."""
    dest = tmp_path_factory.mktemp("sdist")
    out = subprocess.run(
        [sys.executable, str(REPO / "caffe_patch/fetch_caffe.py"), "--dest", str(dest)],
        check=True, capture_output=True, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """approx-dropout ARGV in-process: (exit status, stdout, stderr)."""
    from approx_dropout import cli

    try:
        code = cli.main(list(argv))
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err
