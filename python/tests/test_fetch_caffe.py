"""caffe_patch/fetch_caffe.py on a small fake sdist: the pin is checked before
anything is unpacked or run, and only a complete unpack is ever accepted."""
from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import subprocess
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

from conftest import REPO

TOPDIR = "fake-caffe-1.0"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_caffe",
                                                  REPO / "caffe_patch/fetch_caffe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fetch() -> ModuleType:
    return load_script()


def make_sdist(path: Path, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{TOPDIR}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


FILES = {"setup.py": b"raise SystemExit('this must never run')\n",
         "src/caffe/net.cpp": b"// net\n", "include/caffe/net.hpp": b"// header\n"}


@pytest.fixture
def sdist(tmp_path) -> tuple[Path, str]:
    archive = tmp_path / "cache" / "fake-caffe-1.0.tar.gz"
    archive.parent.mkdir()
    return archive, make_sdist(archive, FILES)


def test_pin_file_is_read(fetch):
    requirement, sha256, topdir = fetch.read_pin()
    assert requirement.startswith("brocolli-caffe==") and len(sha256) == 64
    assert topdir == requirement.replace("==", "-")


def test_unpack_writes_the_tree_then_the_stamp(fetch, sdist, tmp_path):
    archive, sha = sdist
    dest = tmp_path / "dest"
    tree = fetch.unpack(archive, sha, TOPDIR, dest)
    assert tree == dest / TOPDIR
    assert (tree / "src/caffe/net.cpp").read_bytes() == FILES["src/caffe/net.cpp"]
    assert (dest / ".source-sha256").read_text().strip() == sha
    assert sorted(p.name for p in dest.iterdir()) == [".source-sha256", TOPDIR]


def test_a_stamped_tree_is_not_unpacked_again(fetch, sdist, tmp_path, monkeypatch):
    archive, sha = sdist
    dest = tmp_path / "dest"
    fetch.unpack(archive, sha, TOPDIR, dest)
    (dest / TOPDIR / "patched").write_text("kept")  # what apply_patch adds in place

    def no_tar(*args, **kwargs):
        raise AssertionError("unpacked again")
    monkeypatch.setattr(fetch.tarfile, "open", no_tar)
    assert fetch.unpack(archive, sha, TOPDIR, dest) == dest / TOPDIR
    assert (dest / TOPDIR / "patched").read_text() == "kept"


def test_hash_mismatch_refuses_before_unpacking(fetch, sdist, tmp_path, monkeypatch):
    archive, sha = sdist
    dest = tmp_path / "dest"
    opened = []
    monkeypatch.setattr(fetch.tarfile, "open", lambda *a, **k: opened.append(a))
    with pytest.raises(fetch.FetchError, match="has sha256 .* but caffe_source.txt pins"):
        fetch.unpack(archive, "0" * 64, TOPDIR, dest)
    assert opened == [] and not dest.exists()


def test_main_refuses_a_cached_archive_that_does_not_match(fetch, sdist, tmp_path,
                                                           monkeypatch, capsys):
    archive, sha = sdist
    pin = tmp_path / "pin.txt"
    pin.write_text(f"# comment\nfake-caffe==1.0 {'1' * 64} {TOPDIR}\n")
    monkeypatch.setattr(fetch, "PIN_FILE", pin)
    monkeypatch.setattr(fetch.subprocess, "run", lambda *a, **k: pytest.fail("pip ran"))
    dest = tmp_path / "dest"
    code = fetch.main(["--dest", str(dest), "--cache", str(archive.parent)])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("fetch_caffe: error: ") and "delete it to download again" in err
    assert not dest.exists()


def test_interrupted_unpack_is_redone(fetch, sdist, tmp_path, monkeypatch):
    """A stamp that matches must not vouch for a tree whose unpack was cut off."""
    archive, sha = sdist
    dest = tmp_path / "dest"
    fetch.unpack(archive, sha, TOPDIR, dest)
    # the tree goes missing (deleted, or a previous version's tree was being
    # replaced) while the stamp still names this hash; then the unpack dies
    fetch.shutil.rmtree(dest / TOPDIR)
    real_extractall = tarfile.TarFile.extractall

    def dies_half_way(self, path, *args, **kwargs):
        member = self.getmember(f"{TOPDIR}/setup.py")
        self.extract(member, path, filter="data")
        raise KeyboardInterrupt  # the build was cancelled
    monkeypatch.setattr(tarfile.TarFile, "extractall", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        fetch.unpack(archive, sha, TOPDIR, dest)
    # nothing claims to be complete, and the partial files are not where the build looks
    assert not (dest / ".source-sha256").exists()
    assert not (dest / TOPDIR).exists()
    monkeypatch.setattr(tarfile.TarFile, "extractall", real_extractall)
    tree = fetch.unpack(archive, sha, TOPDIR, dest)
    assert (tree / "include/caffe/net.hpp").is_file()
    assert sorted(p.name for p in dest.iterdir()) == [".source-sha256", TOPDIR]


def test_killed_unpack_leaves_no_stamp_and_is_cleaned_up(fetch, sdist, tmp_path):
    """A run killed outright (no cleanup) left a temporary folder and no stamp."""
    archive, sha = sdist
    dest = tmp_path / "dest"
    dest.mkdir()
    stale = dest / ".extract-abc123" / TOPDIR
    stale.mkdir(parents=True)
    (stale / "half").write_text("x")
    tree = fetch.unpack(archive, sha, TOPDIR, dest)
    assert sorted(p.name for p in dest.iterdir()) == [".source-sha256", TOPDIR]
    assert not (tree / "half").exists()


def test_a_changed_pin_replaces_the_tree(fetch, tmp_path):
    dest = tmp_path / "dest"
    old = tmp_path / "old.tar.gz"
    old_sha = make_sdist(old, {"old-only.txt": b"old"})
    fetch.unpack(old, old_sha, TOPDIR, dest)
    new = tmp_path / "new.tar.gz"
    new_sha = make_sdist(new, {"new-only.txt": b"new"})
    tree = fetch.unpack(new, new_sha, TOPDIR, dest)
    assert sorted(p.name for p in tree.iterdir()) == ["new-only.txt"]
    assert (dest / ".source-sha256").read_text().strip() == new_sha


def test_download_uses_pip_in_hash_checking_mode(fetch, sdist, tmp_path, monkeypatch):
    archive, sha = sdist
    calls = []

    def fake_pip(cmd, **kwargs):
        req = Path(cmd[cmd.index("-r") + 1]).read_text()
        calls.append((cmd, req))
        into = Path(cmd[cmd.index("-d") + 1])
        into.mkdir(parents=True)
        (into / archive.name).write_bytes(archive.read_bytes())
        return subprocess.CompletedProcess(cmd, 0)
    monkeypatch.setattr(fetch.subprocess, "run", fake_pip)
    cache = tmp_path / "newcache"
    got = fetch.download("fake-caffe==1.0", sha, cache)
    assert got == cache / "fake-caffe-1.0.tar.gz" and got.read_bytes() == archive.read_bytes()
    (cmd, req), = calls
    assert "--require-hashes" in cmd and "--no-deps" in cmd
    assert req == f"fake-caffe==1.0 --hash=sha256:{sha}\n"
    assert [p.name for p in cache.iterdir()] == ["fake-caffe-1.0.tar.gz"]  # no leftovers


def test_download_keeps_nothing_that_does_not_match(fetch, sdist, tmp_path, monkeypatch):
    """Even if pip handed back another file, it never enters the cache."""
    archive, sha = sdist

    def wrong_file(cmd, **kwargs):
        into = Path(cmd[cmd.index("-d") + 1])
        into.mkdir(parents=True)
        (into / archive.name).write_bytes(b"not the pinned archive")
        return subprocess.CompletedProcess(cmd, 0)
    monkeypatch.setattr(fetch.subprocess, "run", wrong_file)
    cache = tmp_path / "newcache"
    with pytest.raises(fetch.FetchError, match="but caffe_source.txt pins"):
        fetch.download("fake-caffe==1.0", sha, cache)
    assert list(cache.iterdir()) == []


def test_pip_failure_is_one_clear_error(fetch, tmp_path, monkeypatch, capsys):
    pin = tmp_path / "pin.txt"
    pin.write_text(f"fake-caffe==1.0 {'2' * 64} {TOPDIR}\n")
    monkeypatch.setattr(fetch, "PIN_FILE", pin)
    monkeypatch.setattr(fetch.subprocess, "run",
                        lambda cmd, **k: subprocess.CompletedProcess(cmd, 1))
    code = fetch.main(["--dest", str(tmp_path / "d"), "--cache", str(tmp_path / "c")])
    assert code == 1
    assert "pip could not download fake-caffe==1.0 with sha256 2222" in capsys.readouterr().err


def test_real_pip_rejects_a_wrong_hash_before_building(tmp_path):
    """pip's hash-checking mode fails on the hash, before metadata preparation.

    Uses the archive cached by the build (no network): pip's find-links points
    at it, and a wrong pin must stop pip before 'Preparing metadata'.
    """
    fetch = load_script()
    requirement, sha256, topdir = fetch.read_pin()
    cache = Path(os.environ.get("APPROX_DROPOUT_CACHE", Path.home() / ".cache/approx-dropout"))
    cached = cache / f"{topdir}.tar.gz"
    if not cached.is_file():
        pytest.skip(f"no cached sdist at {cached}")
    req = tmp_path / "req.txt"
    req.write_text(f"{requirement} --hash=sha256:{'0' * 64}\n")
    cmd = fetch.pip_download_command(req, tmp_path / "out")
    cmd[cmd.index("download") + 1:cmd.index("download") + 1] = [
        "--no-index", "--find-links", str(cached.parent)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "DO NOT MATCH THE HASHES" in proc.stdout + proc.stderr
    assert "Preparing metadata" not in proc.stdout + proc.stderr
    assert "Installing build dependencies" not in proc.stdout + proc.stderr


# ---- scripts/setup.sh --cuda: NVIDIA's keyring package is pinned too ---------

def keyring_block(text: str) -> str:
    """The keyring download of setup.sh, from its URL to the trap's reset."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith("keyring_url="))
    end = next(i for i, ln in enumerate(lines) if ln.strip() == "trap - EXIT")
    return "\n".join(lines[start:end + 1])


def run_keyring_block(tmp_path: Path, served: bytes, pin: str | None = None):
    """Run the block with a fake downloader (python3) and a fake dpkg on PATH."""
    setup = (REPO / "scripts/setup.sh").read_text()
    block = keyring_block(setup)
    if pin is not None:
        block = block.replace(
            next(ln for ln in block.splitlines() if "keyring_sha256=" in ln).strip(),
            f"keyring_sha256={pin}")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "served").write_bytes(served)
    (bin_dir / "python3").write_text(f'#!/bin/sh\ncp "{tmp_path}/served" "$4"\n')
    (bin_dir / "dpkg").write_text(f'#!/bin/sh\ncp "$2" "{tmp_path}/installed"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    script = "set -euo pipefail\n" + block + "\necho block-done\n"
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "TMPDIR": str(tmpdir)})
    return proc, tmpdir


def test_setup_pins_the_cuda_keyring():
    block = keyring_block((REPO / "scripts/setup.sh").read_text())
    pin = next(ln for ln in block.splitlines() if "keyring_sha256=" in ln).split("=", 1)[1]
    assert len(pin) == 64 and int(pin, 16) >= 0
    assert "debian12/x86_64/cuda-keyring_1.1-1_all.deb" in block
    assert "/tmp/cuda-keyring.deb" not in block and "mktemp" in block


def test_setup_refuses_a_keyring_that_does_not_match(tmp_path):
    proc, tmpdir = run_keyring_block(tmp_path, b"someone else's keyring")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "refusing to install it" in proc.stderr and "not the pinned" in proc.stderr
    assert not (tmp_path / "installed").exists()  # dpkg never saw it
    assert list(tmpdir.iterdir()) == []  # the download was removed


def test_setup_installs_a_keyring_that_matches(tmp_path):
    served = b"the genuine keyring"
    proc, tmpdir = run_keyring_block(tmp_path, served, hashlib.sha256(served).hexdigest())
    assert proc.returncode == 0, proc.stderr
    assert "block-done" in proc.stdout
    assert (tmp_path / "installed").read_bytes() == served
    assert list(tmpdir.iterdir()) == []
