"""The package's layout: what each subpackage needs to import, and that the
library works outside a checkout (only defaults look for one)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import approx_dropout
from conftest import REPO

PACKAGE = Path(approx_dropout.__file__).resolve().parent


def python(code: str, *, isolated: bool = False, path: Path = PACKAGE.parent,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter that finds approx_dropout under path.

    isolated: -I -S, no site-packages and no .pth hooks at all (the standard
    library only, as on a bare machine)."""
    flags = ["-I", "-S"] if isolated else []
    code = f"import sys; sys.path.insert(0, {str(path)!r})\n" + code
    run_env = {k: v for k, v in os.environ.items()
               if k not in ("APPROX_DROPOUT_BUILD", "APPROX_DROPOUT_DATA", "PYTHONPATH")}
    run_env.update(env or {})
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True,
                          env=run_env, cwd=path)


def test_bundle_runner_needs_only_the_standard_library():
    # a bare GPU machine: python3 without numpy, protobuf or a checkout
    proc = python("import approx_dropout.bundle.run\n"
                  "ours = {'approx_dropout', '__main__'}\n"
                  "third = {m.split('.')[0] for m in sys.modules}\n"
                  "print(sorted(third - set(sys.stdlib_module_names) - ours))", isolated=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("module", ["approx_dropout.patterns.search", "approx_dropout.data.cache",
                                    "approx_dropout.data.fashion_mnist",
                                    "approx_dropout.data.text", "approx_dropout.prototxt.nets"])
def test_pure_modules_import_without_a_caffe_build(module, tmp_path):
    proc = python(f"import {module}\n"
                  "print(sorted(m for m in ('caffe', 'caffe_pb2', 'caffe.proto.caffe_pb2')\n"
                  "             if m in sys.modules))",
                  env={"APPROX_DROPOUT_BUILD": str(tmp_path / "no-build")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_copy_outside_a_checkout_needs_no_checkout(tmp_path):
    """Copied elsewhere (as into the GPU bundle), the package finds no
    checkout and says what to set; with APPROX_DROPOUT_BUILD it works."""
    shutil.copytree(PACKAGE, tmp_path / "approx_dropout",
                    ignore=shutil.ignore_patterns("__pycache__"))
    probe = ("from approx_dropout import caffe_env\n"
             "from approx_dropout.data import cache\n"
             "print(caffe_env.source_checkout())\n"
             "print(cache.data_root())\n"
             "try:\n"
             "    print(caffe_env.build_dir())\n"
             "except caffe_env.CaffeNotBuiltError as err:\n"
             "    print('error:', err)\n")
    proc = python(probe, path=tmp_path, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    checkout, data, build = proc.stdout.strip().splitlines()
    assert checkout == "None"
    assert data == str(tmp_path / "cache" / "approx-dropout" / "data")
    assert build.startswith("error:") and "APPROX_DROPOUT_BUILD" in build
    proc = python(probe, path=tmp_path, env={"APPROX_DROPOUT_BUILD": str(tmp_path / "b"),
                                             "APPROX_DROPOUT_DATA": str(tmp_path / "d")})
    assert proc.stdout.strip().splitlines()[1:] == [str(tmp_path / "d"), str(tmp_path / "b")]


def test_inside_the_checkout_the_defaults_are_the_checkouts():
    from approx_dropout import caffe_env
    from approx_dropout.data import cache

    if caffe_env.source_checkout() is None:
        pytest.skip("approx_dropout is not imported from a checkout here")
    assert caffe_env.source_checkout() == REPO
    proc = python("from approx_dropout import caffe_env\nfrom approx_dropout.data import cache\n"
                  "print(caffe_env.build_dir()); print(cache.data_root())")
    assert proc.stdout.split() == [str(REPO / "build" / "cpu"), str(REPO / "data")]
    assert cache.source_checkout is caffe_env.source_checkout


def test_scripts_do_not_edit_sys_path():
    """The scripts import the installed package (scripts/setup.sh installs it)."""
    offenders = [str(p.relative_to(REPO)) for p in sorted((REPO / "scripts").rglob("*.py"))
                 + sorted((REPO / "caffe_patch").glob("*.py"))
                 if "sys.path" in p.read_text()]
    assert offenders == []


def test_package_list_names_every_subpackage():
    text = (REPO / "python" / "pyproject.toml").read_text()
    subpackages = sorted(p.parent.relative_to(PACKAGE.parent).as_posix().replace("/", ".")
                         for p in PACKAGE.rglob("__init__.py"))
    for name in subpackages:
        assert f'"{name}"' in text, f"{name} is missing from [tool.setuptools] packages"
