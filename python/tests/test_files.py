"""approx_dropout.files: atomic writes, backups, the rewrite lock, one-line errors.

The command-line behaviour built on it (in-place rewrites through links,
kept permissions, read-only targets, concurrent runs) is tested in
test_cli.py."""
from __future__ import annotations

import pytest

from approx_dropout import files


def test_atomic_write_keeps_every_backup(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text("v1")
    assert files.write_text_atomic(path, "v2", backup=True) == tmp_path / "net.prototxt.bak"
    assert files.write_text_atomic(path, "v3", backup=True) == tmp_path / "net.prototxt.bak1"
    assert path.read_text() == "v3"
    assert (tmp_path / "net.prototxt.bak").read_text() == "v1"
    assert (tmp_path / "net.prototxt.bak1").read_text() == "v2"


def test_failed_rename_leaves_the_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "net.prototxt"
    path.write_text("original")

    def fail(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(files.os, "replace", fail)
    with pytest.raises(files.FileWriteError, match="No space left on device"):
        files.write_text_atomic(path, "new")
    assert path.read_text() == "original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.prototxt"]


def test_read_only_target_and_directory_are_refused(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text("v1")
    path.chmod(0o444)
    with pytest.raises(files.FileWriteError, match=r"it is read-only \(mode 0444\); "
                                                   r"nothing written"):
        files.write_text_atomic(path, "v2")
    assert path.read_text() == "v1"
    with pytest.raises(files.FileWriteError, match="it is a directory"):
        files.write_text_atomic(tmp_path, "v2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.prototxt"]


def test_lock_waits_and_gives_up_with_a_clear_error(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text("v1")
    with files.locked(path):
        with pytest.raises(files.FileWriteError, match="another run has held"):
            with files.locked(path, timeout=0.2):
                pass
    with files.locked(path):  # released: free again
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.prototxt"]


def test_backup_names_are_claimed_exclusively(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text("v1")
    (tmp_path / "net.prototxt.bak").symlink_to(tmp_path / "elsewhere")  # dangling
    saved = files.write_text_atomic(path, "v2", backup=True)
    assert saved == tmp_path / "net.prototxt.bak1" and saved.read_text() == "v1"
    assert not (tmp_path / "elsewhere").exists()  # the link was not followed


def test_a_rewrite_of_a_file_changed_meanwhile_is_refused(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text("v1")
    with files.locked(path):
        path.write_text("theirs")  # another program, which takes no lock
        with pytest.raises(files.FileWriteError, match="changed while it was being "
                                                        "rewritten"):
            files.write_text_atomic(path, "v2", backup=True, expect=b"v1")
    assert path.read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.prototxt"]
