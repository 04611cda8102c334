#!/usr/bin/env python3
"""Apply the approx-dropout changes to a Caffe source tree.

The same edits serve two trees that differ in many unrelated places:
upstream BVLC/caffe at commit 9b89154 and the PyPI sdist brocolli-caffe 9.0.2.
A unified diff would need one copy per tree, so each change is an anchored
regular-expression edit instead. Every edit leaves a marker comment, which
makes a second application a no-op. Nothing is written unless every edit
either applies cleanly or is already applied, so a tree is never left half
patched.

Usage: apply_patch.py CAFFE_DIR [--check]
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
MARK = "approx-dropout caffe_patch"
UPSTREAM = "BVLC/caffe 9b89154"
SDIST = "brocolli-caffe 9.0.2"


@dataclass(frozen=True)
class Edit:
    path: str
    reason: str
    pattern: str        # must match exactly once in an unpatched file
    replacement: str    # re.sub replacement; must contain `marker`
    marker: str         # present <=> this edit is already applied
    trees: tuple[str, ...] = (UPSTREAM, SDIST)
    # For an edit whose content evolves (the proto message): matches the text
    # an earlier version of this edit inserted, so that a tree patched before
    # is brought up to date instead of being reported as already applied.
    applied: str | None = None
    inserted: str = ""  # what `applied` must equal to be up to date


def _proto_message() -> str:
    return (HERE / "approx_dropout_parameter.proto").read_text()


EDITS: tuple[Edit, ...] = (
    Edit("src/caffe/proto/caffe.proto",
         "the approx_dropout_param field of LayerParameter",
         r"^(  optional AccuracyParameter accuracy_param = 102;\n)",
         r"\1  optional ApproxDropoutParameter approx_dropout_param = 1805;"
         "  // " + MARK + "\n",
         "approx_dropout_param = 1805;"),
    Edit("src/caffe/proto/caffe.proto",
         "keep the 'next available ID' comment honest about 1805",
         r"^(// LayerParameter next available layer-specific ID: \d+ .*\n)",
         r"\1// (approx_dropout_param uses 1805, far above that range, so that it"
         r" stays free\n// in forks that keep adding fields; " + MARK + ")\n",
         "approx_dropout_param uses 1805"),
    Edit("src/caffe/proto/caffe.proto",
         "the ApproxDropoutParameter message",
         r"^(message ArgMaxParameter \{\n)",
         "// " + MARK + "\n" + _proto_message().replace("\\", "\\\\") + r"\1",
         "message ApproxDropoutParameter {",
         inserted="// " + MARK + "\n" + _proto_message(),
         applied=r"^// " + MARK + r"\n(?:.*\n)*?message ApproxDropoutParameter \{\n"
                 r"(?:.*\n)*?\}\n\n*"),
    Edit("src/caffe/proto/caffe.proto",
         "the approx_dropout_param field of SolverParameter (how SGD and "
         "Nesterov update nets with approximate dropout layers)",
         r"^(  optional float clip_gradients = 35 \[default = -1\];\n)",
         r"\1  optional ApproxDropoutSolverParameter approx_dropout_param = 1805;"
         "  // " + MARK + "\n",
         "ApproxDropoutSolverParameter approx_dropout_param = 1805;"),
    Edit("include/caffe/solver.hpp",
         "hooks for an update that defers what approximate dropout skipped: "
         "started and ended by Step, brought up to date before a TEST pass "
         "or a snapshot",
         r"^(  virtual void ApplyUpdate\(\) = 0;\n)",
         r"\1  // " + MARK + ": an update that defers the parts of the\n"
         "  // parameters that approximate dropout layers skipped (SGDSolver).\n"
         "  // Begin returns true when it has cleared the diffs itself; Sync\n"
         "  // brings every deferred part up to date; End also stops deferring.\n"
         "  virtual bool BeginDeferredUpdate() { return false; }\n"
         "  virtual void SyncDeferredUpdate() {}\n"
         "  virtual void EndDeferredUpdate() {}\n",
         MARK + ": an update that defers"),
    Edit("src/caffe/solver.cpp",
         "Step starts the deferred update and ends it however it returns",
         r"^(  smoothed_loss_ = 0;\n)",
         r"\1  // " + MARK + ": a deferred update (SGDSolver with\n"
         "  // approximate dropout layers) is brought up to date and stopped\n"
         "  // whenever Step returns; it clears the diffs it uses itself.\n"
         "  struct DeferredUpdateScope {\n"
         "    Solver* solver;\n"
         "    ~DeferredUpdateScope() { solver->EndDeferredUpdate(); }\n"
         "  } deferred_update_scope = {this};\n"
         "  const bool deferred_update = BeginDeferredUpdate();\n",
         MARK + ": a deferred update (SGDSolver"),
    Edit("src/caffe/solver.cpp",
         "a deferred update keeps the diffs it uses cleared itself",
         r"^    net_->ClearParamDiffs\(\);\n",
         "    if (!deferred_update) net_->ClearParamDiffs();  // " + MARK + "\n",
         "if (!deferred_update) net_->ClearParamDiffs();"),
    Edit("src/caffe/solver.cpp",
         "a TEST pass reads every weight: deferred parts are brought up to "
         "date first",
         r"^(void Solver<Dtype>::TestAll\(\) \{\n)",
         r"\1  SyncDeferredUpdate();  // " + MARK + ": test nets read all weights\n",
         MARK + ": test nets read all weights"),
    Edit("src/caffe/solver.cpp",
         "a snapshot writes every weight and history: deferred parts are "
         "brought up to date first",
         r"^(void Solver<Dtype>::Snapshot\(\) \{\n  CHECK\(Caffe::root_solver\(\)\);\n)",
         r"\1  SyncDeferredUpdate();  // " + MARK + ": weights and history current\n",
         MARK + ": weights and history current"),
    Edit("include/caffe/sgd_solvers.hpp",
         "SGDSolver holds the deferred update (layers/…/approx_dropout_lazy_update)",
         r"^(template <typename Dtype>\nclass SGDSolver : public Solver<Dtype> \{\n)",
         "template <typename Dtype> class ApproxDropoutLazyUpdate;  // " + MARK +
         "\n\n" r"\1",
         "class ApproxDropoutLazyUpdate;  // " + MARK),
    Edit("include/caffe/sgd_solvers.hpp",
         "SGDSolver's deferred-update hooks and state",
         r"^(  vector<shared_ptr<Blob<Dtype> > > history_, update_, temp_;\n)",
         r"\1  // " + MARK + ": the update that skips what approximate\n"
         "  // dropout layers skipped (defined in approx_dropout_lazy_update.cpp).\n"
         "  virtual bool BeginDeferredUpdate();\n"
         "  virtual void SyncDeferredUpdate();\n"
         "  virtual void EndDeferredUpdate();\n"
         "  bool ApplyDeferredUpdate(Dtype rate);\n"
         "  shared_ptr<ApproxDropoutLazyUpdate<Dtype> > lazy_update_;\n",
         MARK + ": the update that skips"),
    Edit("src/caffe/solvers/sgd_solver.cpp",
         "ApplyUpdate hands the step to the deferred update when one runs",
         r"^  ClipGradients\(\);\n"
         r"  for \(int param_id = 0; param_id < this->net_->learnable_params\(\)\.size\(\);\n"
         r"       \+\+param_id\) \{\n"
         r"    Normalize\(param_id\);\n"
         r"    Regularize\(param_id\);\n"
         r"    ComputeUpdateValue\(param_id, rate\);\n"
         r"  \}\n"
         r"  this->net_->Update\(\);\n",
         "  // " + MARK + ": inside Step, with approximate dropout layers,\n"
         "  // the deferred update does all of the below in one pass.\n"
         "  if (!ApplyDeferredUpdate(rate)) {\n"
         "    ClipGradients();\n"
         "    for (int param_id = 0;\n"
         "         param_id < this->net_->learnable_params().size(); ++param_id) {\n"
         "      Normalize(param_id);\n"
         "      Regularize(param_id);\n"
         "      ComputeUpdateValue(param_id, rate);\n"
         "    }\n"
         "    this->net_->Update();\n"
         "  }\n",
         MARK + ": inside Step, with approximate"),
    Edit("src/caffe/common.cpp",
         "CUDA 13 removed cudaDeviceProp::clockRate, deviceOverlap and "
         "kernelExecTimeoutEnabled; read them with cudaDeviceGetAttribute",
         r'^  LOG\(INFO\) << "Clock rate: +" << prop\.clockRate;\n'
         r'((?:.*\n)*?)'
         r'  LOG\(INFO\) << "Concurrent copy and execution: "\n'
         r'      << \(prop\.deviceOverlap \? "Yes" : "No"\);\n'
         r'((?:.*\n)*?)'
         r'      << \(prop\.kernelExecTimeoutEnabled \? "Yes" : "No"\);\n',
         "  // " + MARK + ": CUDA 13 removed these cudaDeviceProp fields.\n"
         "  int clock_rate = 0, gpu_overlap = 0, exec_timeout = 0;\n"
         "  CUDA_CHECK(cudaDeviceGetAttribute(&clock_rate, cudaDevAttrClockRate,"
         " device));\n"
         "  CUDA_CHECK(cudaDeviceGetAttribute(&gpu_overlap, cudaDevAttrGpuOverlap,"
         " device));\n"
         "  CUDA_CHECK(cudaDeviceGetAttribute(&exec_timeout,\n"
         "      cudaDevAttrKernelExecTimeout, device));\n"
         '  LOG(INFO) << "Clock rate:                    " << clock_rate;\n'
         r"\1"
         '  LOG(INFO) << "Concurrent copy and execution: "\n'
         '      << (gpu_overlap ? "Yes" : "No");\n'
         r"\2"
         '      << (exec_timeout ? "Yes" : "No");\n',
         "cudaDevAttrKernelExecTimeout"),
    Edit("src/caffe/util/io.cpp",
         "protobuf >= 3.18 removed the two-argument SetTotalBytesLimit",
         r"^(  coded_input->SetTotalBytesLimit\(kProtoReadBytesLimit), 536870912\);\n",
         "  // " + MARK + ": protobuf >= 3.18 API\n" r"\1);\n",
         MARK + ": protobuf >= 3.18 API",
         trees=(UPSTREAM,)),
    Edit("src/caffe/net.cpp",
         "libcaffe included the gtest header caffe/test/test_caffe_main.hpp "
         "for no reason",
         r'^#include "caffe/test/test_caffe_main\.hpp"\n',
         "// " + MARK + ": removed an unused include of "
         "caffe/test/test_caffe_main.hpp (gtest)\n",
         MARK + ": removed an unused include",
         trees=(SDIST,)),
    Edit("python/caffe/io.py",
         "scikit-image and scipy are needed only by caffe.io's image helpers; "
         "'import caffe' must not require them",
         r"^import skimage\.io\n(?:from (?:scipy\.ndimage|skimage\.transform)"
         r" import \w+\n)+",
         "# " + MARK + ": scikit-image and scipy serve only the image helpers\n"
         "# below, so importing caffe must not require them.\n"
         "try:\n"
         "    import skimage.io\n"
         "    from scipy.ndimage import zoom\n"
         "    from skimage.transform import resize\n"
         "except ImportError as _image_import_error:\n"
         "    class _MissingImageLibrary(object):\n"
         "        def _fail(self, *args, **kwargs):\n"
         "            raise ImportError('caffe.io image helpers need scikit-image'\n"
         "                              ' and scipy: %s' % _image_import_error)\n"
         "        __getattr__ = __call__ = _fail\n"
         "    skimage = zoom = resize = _MissingImageLibrary()\n",
         MARK + ": scikit-image and scipy"),
)


class PatchError(Exception):
    pass


def identify(root: Path) -> str:
    """Name the tree, or raise PatchError saying why it is not recognised."""
    proto = root / "src/caffe/proto/caffe.proto"
    if not proto.is_file():
        raise PatchError(f"{proto}: missing; {root} is not a Caffe source tree "
                         f"(expected {UPSTREAM} or {SDIST})")
    pkg_info = root / "PKG-INFO"
    if pkg_info.is_file() and re.search(r"^Name: brocolli-caffe$",
                                        pkg_info.read_text(), re.M):
        version = re.search(r"^Version: (.*)$", pkg_info.read_text(), re.M)
        if not version or version.group(1).strip() != "9.0.2":
            raise PatchError(f"{pkg_info}: brocolli-caffe version "
                             f"{version.group(1) if version else '?'}, "
                             f"but this patch knows only {SDIST}")
        return SDIST
    if (root / "src/caffe/layers/clip_layer.cpp").is_file():
        return UPSTREAM
    raise PatchError(f"{root}: a Caffe tree this patch does not recognise "
                     f"(expected {UPSTREAM}, which has "
                     f"src/caffe/layers/clip_layer.cpp, or {SDIST}, which "
                     f"has a PKG-INFO naming it)")


def plan(root: Path) -> tuple[str, dict[Path, str], list[str]]:
    """Compute the patched text of every file without writing anything.

    Returns the tree name, {path: new text} for files that change, and one
    report line per edit.
    """
    tree = identify(root)
    texts: dict[Path, str] = {}
    report: list[str] = []
    for edit in EDITS:
        if tree not in edit.trees:
            continue
        path = root / edit.path
        if path not in texts:
            try:
                texts[path] = path.read_text()
            except OSError as err:
                raise PatchError(f"{path}: cannot read ({err.strerror}); "
                                 f"needed for {edit.reason}") from err
        text = texts[path]
        if edit.marker in text:
            if edit.applied is not None:
                found = re.findall(edit.applied, text, re.M)
                if len(found) != 1:
                    raise PatchError(
                        f"{path}: '{edit.reason}' was applied, but its text "
                        f"matches {len(found)} times (expected once); restore "
                        f"the file from {tree} and configure again")
                current = edit.inserted
                if found[0] != current:
                    texts[path] = text.replace(found[0], current)
                    report.append(f"updated          {edit.path}: {edit.reason}")
                    continue
            report.append(f"already applied  {edit.path}: {edit.reason}")
            continue
        matches = len(re.findall(edit.pattern, text, re.M))
        if matches != 1:
            raise PatchError(
                f"{path}: cannot apply '{edit.reason}': its anchor matches "
                f"{matches} times (expected once); this file differs from "
                f"{tree} as the patch knows it")
        texts[path] = re.sub(edit.pattern, edit.replacement, text, flags=re.M)
        assert edit.marker in texts[path], edit
        report.append(f"applied          {edit.path}: {edit.reason}")
    changed = {p: t for p, t in texts.items() if t != p.read_text()}
    return tree, changed, report


def write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Apply the approx-dropout changes to a Caffe source tree "
                    f"({UPSTREAM} or {SDIST}). Idempotent.")
    parser.add_argument("caffe_dir", type=Path, help="root of the Caffe tree")
    parser.add_argument("--check", action="store_true",
                        help="only report; exit 0 if fully applied, 3 if not")
    parser.add_argument("--quiet", action="store_true",
                        help="print only a summary line")
    args = parser.parse_args(argv)
    try:
        tree, changed, report = plan(args.caffe_dir.resolve())
    except PatchError as err:
        print(f"caffe_patch: error: {err}", file=sys.stderr)
        return 2
    if not args.quiet:
        for line in report:
            print(f"caffe_patch: {line}")
    if args.check:
        state = "not fully applied" if changed else "fully applied"
        print(f"caffe_patch: {tree} at {args.caffe_dir}: {state}")
        return 3 if changed else 0
    for path, text in changed.items():
        write_atomically(path, text)
    print(f"caffe_patch: {tree} at {args.caffe_dir}: "
          f"{len(changed)} file(s) changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
