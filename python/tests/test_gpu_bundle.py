"""The GPU bundle's pack and unpack-and-run path, on the CPU build.

The CUDA bundle itself is packed and run in CPU mode by scripts/run_tests.sh
after the CUDA build; these tests pin the behaviour on the (faster) CPU build:
the library closure, the manifest, the refusals, and a CPU-mode run.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from xml.etree import ElementTree

import pytest

from approx_dropout import caffe_env
from approx_dropout.bundle import pack as bundle_pack
from approx_dropout.bundle import run as bundle_run
from conftest import REPO

NAME = "test-bundle"


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle")
    archive = bundle_pack.pack(caffe_env.build_dir(), out, NAME, xz_level=0)
    return archive


@pytest.fixture(scope="module")
def unpacked(packed, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(packed) as tar:
        tar.extractall(dest, filter="tar")
    return dest / NAME


def test_archive_has_its_sha256_and_stays_under_the_limit(packed):
    digest, name = packed.with_name(packed.name + ".sha256").read_text().split()
    assert name == packed.name and digest == bundle_pack.sha256(packed)
    assert packed.stat().st_size < bundle_pack.DEFAULT_MAX_MIB * 2**20


def test_bundle_is_a_build_folder_with_every_library_it_needs(unpacked):
    for rel in bundle_pack.ELF_FILES:
        assert (unpacked / rel).is_file(), rel
    libs = {p.name for p in (unpacked / "lib").iterdir()}
    assert {"libcaffe.so", "libprotobuf.so.32", "libglog.so.1", "libopenblas.so.0"} <= libs
    assert not [n for n in libs if bundle_pack.is_host_library(n)]
    elf = [unpacked / rel for rel in bundle_pack.ELF_FILES] + sorted((unpacked / "lib").iterdir())
    for path in elf:
        for name in bundle_pack.needed(path):
            assert name in libs or bundle_pack.is_host_library(name), (path.name, name)
    assert (unpacked / "python/approx_dropout/bundle/run.py").is_file()
    assert (unpacked / bundle_pack.RUNNER_NAME).read_text() == bundle_pack.RUNNER_SCRIPT
    assert len(list((unpacked / "nets").glob("*.prototxt"))) == \
        len(bundle_pack.MLP_HIDDEN) * len(bundle_pack.MLP_METHODS) \
        + len(bundle_pack.LM_RATES) * len(bundle_pack.LM_METHODS)


def test_host_library_rule():
    for host in ("libc.so.6", "ld-linux-x86-64.so.2", "libstdc++.so.6", "libcublasLt.so.13",
                 "libcudart.so.13", "libcurand.so.10", "libpython3.11.so.1.0"):
        assert bundle_pack.is_host_library(host), host
    for ours in ("libcaffe.so", "libcurl.so.4", "libcom_err.so.2", "libcrypto.so.3",
                 "libhdf5_serial.so.103", "libgfortran.so.5"):
        assert not bundle_pack.is_host_library(ours), ours


def test_manifest_lists_every_file_with_its_hash(unpacked):
    manifest = json.loads((unpacked / "MANIFEST.json").read_text())
    files = {p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == files - {"MANIFEST.json"}
    entry = manifest["files"]["tools/caffe"]
    assert entry["sha256"] == bundle_pack.sha256(unpacked / "tools/caffe")
    assert bundle_run.verify(unpacked)["git_commit"] == manifest["git_commit"]


def test_verify_refuses_a_changed_file(unpacked, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(unpacked, copy, symlinks=True)
    with open(copy / "nets" / "mlp_1024x64_p0.7__rdp.prototxt", "a") as f:
        f.write("# edited\n")
    with pytest.raises(bundle_run.RunError, match="sha256 differs.*mlp_1024x64_p0.7__rdp"):
        bundle_run.verify(copy)


def test_pack_refuses_an_archive_over_the_limit(tmp_path):
    with pytest.raises(bundle_pack.BundleError, match="over the 0.5 MiB limit"):
        bundle_pack.pack(caffe_env.build_dir(), tmp_path, NAME, max_mib=0.5, xz_level=0)
    assert list(tmp_path.iterdir()) == []


def test_pack_refuses_a_folder_that_is_not_a_build(tmp_path, capsys):
    code = bundle_pack.main(["--build", str(tmp_path), "--out", str(tmp_path / "out")])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("bundle.pack: error: ")
    assert "lacks lib/libcaffe.so" in err and "scripts/build.sh --cuda" in err


def test_the_bundles_runner_needs_only_the_standard_library_and_its_folder(unpacked, tmp_path):
    """run_bundle.py, the bundle's entry, under python3 -I -S (no site-packages,
    no PYTHONPATH, another working folder) finds the bundle's own package."""
    proc = subprocess.run([sys.executable, "-I", "-S", str(unpacked / bundle_pack.RUNNER_NAME),
                           "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: run_bundle.py ")
    proc = subprocess.run([sys.executable, "-I", "-S", str(unpacked / bundle_pack.RUNNER_NAME),
                           "--out", str(tmp_path / "o"), "--cpu", "--gtest-filter", "NoSuch.*",
                           "--only", "no-such-group*"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    log = (tmp_path / "o" / "run.log").read_text()
    assert f"bundle {unpacked}: " in log and "files verified" in log
    assert "no bundle nets match ['no-such-group*']" in log


# A few quick tests of each layer (CPU float: typed-test index 0) plus the
# sampler's: the run must reach the layers' own tests, not only the sampler's.
LAYER_TESTS = ["ApproxDropoutInnerProductLayerTest/0.TestSetUp",
               "ApproxDropoutInnerProductLayerTest/0.TestRowOutputMatchesMask",
               "ApproxDropoutInnerProductLayerTest/0.TestTileMatchesMask",
               "ApproxDropoutLSTMLayerTest/0.TestSetUp"]
GTEST_FILTER = ":".join(["DropoutPatternSamplerTest.*"] + LAYER_TESTS)


def gtest_cases(xml: Path) -> list[tuple[str, str, bool]]:
    """(suite, test, passed) for every test gtest ran, from its XML report."""
    ran = []
    for case in ElementTree.parse(xml).getroot().iter("testcase"):
        if case.get("status", "run") == "run" and case.get("result", "completed") != "skipped":
            ran.append((case.get("classname"), case.get("name"), case.find("failure") is None))
    return ran


def test_run_script_unpacks_and_runs_in_cpu_mode(packed, tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [str(REPO / "scripts/run_gpu_bundle.sh"), str(packed), str(out), "--cpu",
         "--gtest-filter", GTEST_FILTER,
         "--only", "mlp_1024x64*", "--repeats", "1", "--iterations", "2"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["device"] == "CPU mode"
    ran = gtest_cases(out / "gtest.xml")
    layer_tests = sorted(f"{suite}.{name}" for suite, name, _ in ran
                         if suite.startswith("ApproxDropout"))
    assert layer_tests == sorted(LAYER_TESTS)  # every layer test named ran, once
    assert any(suite == "DropoutPatternSamplerTest" for suite, _, _ in ran)
    assert all(ok for _, _, ok in ran)
    assert results["gtests"]["exit_code"] == 0 and results["gtests"]["passed"] == len(ran)
    (row,) = results["benchmarks"]
    assert row["group"] == "mlp_1024x64_p0.7"
    assert set(row["ms_per_iteration"]) == set(bundle_pack.MLP_METHODS)
    assert set(row["speedup"]) == set(bundle_pack.MLP_METHODS) - {"stock"}
    assert (out / "gtest.xml").is_file() and "all passed" in (out / "run.log").read_text()
    assert "| mlp_1024x64_p0.7 |" in (out / "results.md").read_text()


def test_run_script_refuses_an_archive_that_does_not_match_its_sha256(packed, tmp_path):
    copy = tmp_path / packed.name
    data = bytearray(packed.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    shutil.copy(packed.with_name(packed.name + ".sha256"), tmp_path)
    proc = subprocess.run([str(REPO / "scripts/run_gpu_bundle.sh"), str(copy), str(tmp_path / "o"),
                           "--cpu"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "does not match its sha256" in proc.stderr


def test_run_script_hashes_the_archive_it_was_given_not_the_name_inside(packed, tmp_path):
    """A tampered copy under another name, beside the intact archive, with the
    intact archive's .sha256 (which names the intact file) must be refused."""
    folder = tmp_path / "drop"
    folder.mkdir()
    shutil.copy(packed, folder / packed.name)
    digest_file = packed.with_name(packed.name + ".sha256")
    data = bytearray(packed.read_bytes())
    data[len(data) // 2] ^= 0xFF
    evil = folder / "other-name.tar.xz"
    evil.write_bytes(bytes(data))
    shutil.copy(digest_file, folder / (evil.name + ".sha256"))  # still names packed.name
    assert (folder / (evil.name + ".sha256")).read_text().split()[1] == packed.name
    proc = subprocess.run([str(REPO / "scripts/run_gpu_bundle.sh"), str(evil),
                           str(tmp_path / "o"), "--cpu"], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "other-name.tar.xz does not match its sha256" in proc.stderr
    assert not (tmp_path / "o").exists()  # refused before unpacking or running anything


@pytest.mark.parametrize("content", ["", "not-a-digest  x.tar.xz\n"])
def test_run_script_refuses_a_sha256_file_without_a_digest(packed, tmp_path, content):
    copy = tmp_path / packed.name
    shutil.copy(packed, copy)
    (tmp_path / (packed.name + ".sha256")).write_text(content)
    proc = subprocess.run([str(REPO / "scripts/run_gpu_bundle.sh"), str(copy), str(tmp_path / "o"),
                           "--cpu"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "holds no sha256 digest" in proc.stderr


def test_failing_gtests_fail_the_run(unpacked, tmp_path):
    # a filter that matches nothing tests nothing: that must not pass
    code = bundle_run.main(["--bundle", str(unpacked), "--out", str(tmp_path), "--cpu",
                            "--gtest-filter", "NoSuchTest.*", "--only", "mlp_1024x64*",
                            "--repeats", "1", "--iterations", "1"])
    assert code == 1
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["gtests"]["passed"] == 0 and results["gtests"]["exit_code"] == 1


def test_gpu_mode_without_a_gpu_says_so(unpacked, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    monkeypatch.setattr(bundle_run, "set_library_path", lambda *a: "")
    code = bundle_run.main(["--bundle", str(unpacked), "--out", str(tmp_path / "o")])
    assert code == 1
    assert "use --cpu" in (tmp_path / "o" / "run.log").read_text()


def test_gtest_filter_selects_the_device():
    assert "ApproxDropoutLSTMLayerTest/2.*" in bundle_run.gtest_filter(cpu=False)
    assert "/0.*" not in bundle_run.gtest_filter(cpu=False)
    assert "ApproxDropoutInnerProductLayerTest/1.*" in bundle_run.gtest_filter(cpu=True)
    assert "/3.*" not in bundle_run.gtest_filter(cpu=True)
    # the ops' own tests everywhere, GPU against CPU only with a GPU
    assert "ApproxDropoutOpsTest*" in bundle_run.gtest_filter(cpu=True)
    assert "ApproxDropoutOpsGpuTest*" in bundle_run.gtest_filter(cpu=False)
    assert "ApproxDropoutOpsGpuTest" not in bundle_run.gtest_filter(cpu=True)


def test_gtest_summary_is_parsed():
    output = """[==========] 5 tests from 2 test cases ran. (10 ms total)
[  PASSED  ] 3 tests.
[  FAILED  ] 2 tests, listed below:
[  FAILED  ] ApproxDropoutLSTMLayerTest/2.TestGradientRow, where TypeParam = caffe::GPUDevice<float>
[  FAILED  ] DropoutPatternSamplerTest.SeedMakesItReproducible

 2 FAILED TESTS
"""
    assert bundle_run.parse_gtest_output(output) == (
        3, ["ApproxDropoutLSTMLayerTest/2.TestGradientRow",
            "DropoutPatternSamplerTest.SeedMakesItReproducible"])
    assert bundle_run.parse_gtest_output("Segmentation fault") == (0, [])
