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


@pytest.mark.parametrize("module", [
    "approx_dropout.bundle.run",  # a bare GPU machine: python3 without numpy, protobuf
    "approx_dropout.files",       # or a checkout; and the file writer everything uses
])
def test_modules_that_need_only_the_standard_library(module):
    proc = python(f"import {module}\n"
                  "ours = {'approx_dropout', '__main__'}\n"
                  "third = {m.split('.')[0] for m in sys.modules}\n"
                  "print(sorted(third - set(sys.stdlib_module_names) - ours))", isolated=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("module", ["approx_dropout.patterns.search", "approx_dropout.data.cache",
                                    "approx_dropout.data.fashion_mnist",
                                    "approx_dropout.data.text", "approx_dropout.prototxt.nets",
                                    "approx_dropout.methods"])
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


def test_package_finder_finds_every_subpackage_and_no_tests():
    """pyproject.toml lets setuptools' finder list the packages: it must find
    every subpackage of approx_dropout, and nothing else (no tests)."""
    import tomllib

    from setuptools import find_packages

    config = tomllib.loads((REPO / "python" / "pyproject.toml").read_text())
    packages = config["tool"]["setuptools"]["packages"]
    assert list(packages) == ["find"], "no hand-written package list"
    finder = packages["find"]
    where = [REPO / "python" / folder for folder in finder.get("where", ["."])]
    assert where == [PACKAGE.parent]
    found = find_packages(where=str(where[0]), include=finder.get("include", ["*"]),
                          exclude=finder.get("exclude", ()))
    # every folder of the package with Python files is a regular package
    # (a folder without __init__.py would be left out of the distribution)
    folders = {p.parent for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    assert not [f for f in folders if not (f / "__init__.py").is_file()]
    subpackages = sorted(f.relative_to(PACKAGE.parent).as_posix().replace("/", ".")
                         for f in folders)
    assert "approx_dropout.bundle" in subpackages and len(subpackages) >= 6
    assert sorted(found) == subpackages
    assert (PACKAGE.parent / "tests" / "conftest.py").is_file()
    assert not [name for name in found if not name.startswith("approx_dropout")]


def test_library_modules_are_not_commands():
    """No `python -m` entry hides in a library module: the package's command
    is cli (with __main__.py); jobs have scripts (scripts/regenerate.py, …)."""
    offenders = [p.relative_to(PACKAGE).as_posix() for p in sorted(PACKAGE.rglob("*.py"))
                 if p.name != "__main__.py" and p != PACKAGE / "cli.py"
                 and "__name__ == \"__main__\"" in p.read_text()]
    assert offenders == []


# ---- who imports whom -------------------------------------------------------------

def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of what a module of the package imports, anywhere in it
    (functions too), relative imports resolved: `from ..prototxt import io`
    gives approx_dropout.prototxt and approx_dropout.prototxt.io (a name
    imported from a package may be a submodule)."""
    import ast

    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_the_harness_does_not_import_the_prototxt_package():
    """The harness (training, timing, results) writes files through
    approx_dropout.files; the prototxt tools are not its business."""
    # the reader sees relative imports, or this test could never fail
    assert "approx_dropout.prototxt.io" in imported_modules(PACKAGE / "cli.py")
    assert "approx_dropout.files" in imported_modules(PACKAGE / "harness" / "experiments.py")
    offenders = {}
    for path in sorted((PACKAGE / "harness").rglob("*.py")):
        found = sorted(m for m in imported_modules(path)
                       if m == "approx_dropout.prototxt"
                       or m.startswith("approx_dropout.prototxt."))
        if found:
            offenders[path.relative_to(PACKAGE).as_posix()] = found
    assert offenders == {}


def test_the_prototxt_modules_and_files_import_no_cycle():
    """rules is imported by shapes (the pattern top) and fill; it must not
    import them back, nor may any other prototxt module close a loop, even
    through an import inside a function."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")
               if "__pycache__" not in p.parts}
    ours = [m for m in modules if m.startswith("approx_dropout.prototxt")] + \
        ["approx_dropout.files"]
    assert "approx_dropout.prototxt.rules" in ours

    def edges(name: str) -> set[str]:
        # an enclosing package is imported before any of its modules anyway
        return {m for m in imported_modules(modules[name])
                if m in ours and m != name and not name.startswith(m + ".")}

    graph = {name: edges(name) for name in ours}
    assert "approx_dropout.prototxt.rules" in graph["approx_dropout.prototxt.shapes"]

    def cycle_from(start: str) -> list[str]:
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return []

    cycles = [" -> ".join(c) for c in map(cycle_from, sorted(graph)) if c]
    assert cycles == []


def test_rules_import_neither_caffe_nor_protobuf(tmp_path):
    proc = python("import approx_dropout.prototxt.rules\n"
                  "print(sorted(m for m in sys.modules if m.split('.')[0] in\n"
                  "             ('caffe', 'caffe_pb2', 'google')))",
                  env={"APPROX_DROPOUT_BUILD": str(tmp_path / "no-build")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
