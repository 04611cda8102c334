"""caffe_patch/apply_patch.py on the real pinned sdist: applies, is idempotent,
refuses unknown or modified trees without writing anything."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

APPLY = REPO / "caffe_patch/apply_patch.py"
TOUCHED = ["src/caffe/proto/caffe.proto", "src/caffe/common.cpp",
           "src/caffe/net.cpp", "python/caffe/io.py",
           # the deferred update's solver hooks
           "include/caffe/solver.hpp", "src/caffe/solver.cpp",
           "include/caffe/sgd_solvers.hpp", "src/caffe/solvers/sgd_solver.cpp"]


def apply(tree: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(APPLY), str(tree), *flags],
                          capture_output=True, text=True)


def snapshot(tree: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tree)): p.read_bytes()
            for p in sorted(tree.rglob("*")) if p.is_file()}


@pytest.fixture
def tree(sdist_archive_tree, tmp_path) -> Path:
    copy = tmp_path / "caffe"
    shutil.copytree(sdist_archive_tree, copy)
    return copy


def test_pristine_tree_reports_unpatched(tree):
    result = apply(tree, "--check")
    assert result.returncode == 3, result.stderr
    assert "not fully applied" in result.stdout


def test_applies_once_then_is_a_noop(tree):
    before = snapshot(tree)
    first = apply(tree)
    assert first.returncode == 0, first.stderr
    assert "brocolli-caffe 9.0.2" in first.stdout
    assert "8 file(s) changed" in first.stdout
    after_first = snapshot(tree)
    changed = sorted(k for k in before if before[k] != after_first[k])
    assert changed == sorted(TOUCHED)
    assert set(after_first) == set(before)  # no files added or removed

    second = apply(tree)
    assert second.returncode == 0, second.stderr
    assert "0 file(s) changed" in second.stdout
    assert second.stdout.count("already applied") == 15
    assert snapshot(tree) == after_first
    assert apply(tree, "--check").returncode == 0


def test_patched_proto_has_the_message_and_field(tree):
    assert apply(tree).returncode == 0
    proto = (tree / "src/caffe/proto/caffe.proto").read_text()
    assert proto.count("optional ApproxDropoutParameter approx_dropout_param = 1805;") == 1
    assert proto.count("message ApproxDropoutParameter {") == 1
    assert proto.count("optional ApproxDropoutSolverParameter approx_dropout_param = 1805;") == 1
    assert proto.count("message ApproxDropoutSolverParameter {") == 1
    solver = (tree / "src/caffe/solver.cpp").read_text()
    assert "if (!deferred_update) net_->ClearParamDiffs();" in solver
    assert solver.count("SyncDeferredUpdate();") == 2  # TestAll, Snapshot
    sgd = (tree / "src/caffe/solvers/sgd_solver.cpp").read_text()
    assert "if (!ApplyDeferredUpdate(rate)) {" in sgd
    assert "SetTotalBytesLimit(536870912)" in (tree / "src/caffe/util/io.cpp").read_text()
    common = (tree / "src/caffe/common.cpp").read_text()
    assert "prop.clockRate" not in common and "prop.deviceOverlap" not in common


def test_unrecognised_tree_is_refused(tmp_path):
    result = apply(tmp_path)
    assert result.returncode == 2
    assert "src/caffe/proto/caffe.proto: missing" in result.stderr
    assert "is not a Caffe source tree" in result.stderr


def test_other_sdist_version_is_refused(tree):
    pkg_info = tree / "PKG-INFO"
    pkg_info.write_text(pkg_info.read_text().replace("Version: 9.0.2", "Version: 9.0.3"))
    result = apply(tree)
    assert result.returncode == 2
    assert "brocolli-caffe version 9.0.3" in result.stderr


def test_modified_file_is_named_and_nothing_is_written(tree):
    common = tree / "src/caffe/common.cpp"
    common.write_text(common.read_text().replace("prop.deviceOverlap", "prop.asyncEngineCount"))
    before = snapshot(tree)
    result = apply(tree)
    assert result.returncode == 2
    assert "src/caffe/common.cpp: cannot apply" in result.stderr
    assert "matches 0 times" in result.stderr
    # the proto edits come first in the plan, yet nothing was written
    assert snapshot(tree) == before


def test_a_tree_patched_with_an_older_message_is_brought_up_to_date(tree):
    # A build folder keeps its patched tree across commits: when the proto
    # message gains a field, configure must update it, not report "already
    # applied" and compile the old message.
    proto = tree / "src/caffe/proto/caffe.proto"
    assert apply(tree).returncode == 0
    current = proto.read_text()
    message = (REPO / "caffe_patch/approx_dropout_parameter.proto").read_text()
    assert message in current
    older = message.replace("  optional uint32 batch_slices = 7", "  // (none yet)\n"
                            "  optional uint32 removed_field = 7")
    assert older != message
    proto.write_text(current.replace(message, older))
    update = apply(tree)
    assert update.returncode == 0, update.stderr
    assert "updated          src/caffe/proto/caffe.proto: the ApproxDropoutParameter" \
        in update.stdout
    assert proto.read_text() == current
    again = apply(tree)
    assert "0 file(s) changed" in again.stdout
    assert apply(tree, "--check").returncode == 0


def test_a_mangled_applied_message_is_refused(tree):
    proto = tree / "src/caffe/proto/caffe.proto"
    assert apply(tree).returncode == 0
    text = proto.read_text()
    block = "// approx-dropout caffe_patch\n" + (
        REPO / "caffe_patch/approx_dropout_parameter.proto").read_text()
    assert block in text
    proto.write_text(text.replace(block, block + block))  # inserted twice
    before = proto.read_text()
    result = apply(tree)
    assert result.returncode == 2
    assert "was applied, but its text matches" in result.stderr
    assert proto.read_text() == before
