"""Write files safely: atomically, under a lock, never losing an update.

A write goes to a temporary file beside the target and is renamed into
place, so a failure never leaves a half-written file; an in-place rewrite
first keeps the original as a backup. A symbolic link is written through
(its target changes, the link stays a link); a read-only target is refused.
Rewrites of one file are serialised by a lock (``locked``), and a rewrite
given the bytes it started from (``expect``) refuses to replace a file that
changed meanwhile, so no update is ever lost silently.

Standard library only (no Caffe, no protobuf): the prototxt tools, the
harness and the scripts write their files through it. Every failure is a
``FileWriteError`` with a one-line message.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK_TIMEOUT_S = 60.0
_LOCK_POLL_S = 0.05


class FileWriteError(Exception):
    """A file that cannot be written (one line); nothing was written."""


def resolve(path: str | os.PathLike[str]) -> Path:
    """The file a write to path must replace: symbolic links followed.

    Renaming over a link would replace the link and leave the file it points
    to unchanged; the new file belongs where the link points.
    """
    return Path(os.path.realpath(path))


def check_writable(path: str | os.PathLike[str]) -> None:
    """Refuse a target that is a directory or a read-only file.

    A rename would replace a read-only file regardless (it needs only the
    folder's permission), and root passes every access check, so the file's
    own write bits decide: a file nobody may write stays as it is.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return  # a new file; its folder is checked when the file is created
    except OSError as e:
        raise FileWriteError(f"cannot write {path}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise FileWriteError(f"cannot write {path}: it is a directory")
    if not st.st_mode & 0o222 or not os.access(path, os.W_OK):
        raise FileWriteError(f"cannot write {path}: it is read-only (mode "
                             f"{stat.S_IMODE(st.st_mode):04o}); nothing written")


@contextmanager
def locked(path: str | os.PathLike[str],
           timeout: float = LOCK_TIMEOUT_S) -> Iterator[Path]:
    """Hold an exclusive lock for rewriting path; yields the resolved target.

    The lock is flock() on .NAME.lock beside the target, held from before the
    file is read until after the new one is renamed into place, so two
    rewrites of one file run one after the other instead of both starting
    from the same original. The lock file is removed on release; a waiter
    that locked a file removed meanwhile notices (different inode) and tries
    again. Gives up with an error after timeout seconds.
    """
    target = resolve(path)
    lock_path = target.with_name(f".{target.name}.lock")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise FileWriteError(f"cannot write {path}: {e.strerror}") from None
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise FileWriteError(
                            f"cannot write {path}: another run has held {lock_path} for "
                            f"{timeout:g} s; nothing written") from None
                    time.sleep(_LOCK_POLL_S)
            try:
                current = os.stat(lock_path)
            except FileNotFoundError:
                current = None
        except BaseException:
            os.close(fd)
            raise
        if current is not None and os.path.samestat(current, os.fstat(fd)):
            break
        os.close(fd)  # the previous holder removed this lock file: take the new one
    try:
        yield target
    finally:
        try:
            os.unlink(lock_path)
        except FileNotFoundError:
            pass
        os.close(fd)


def _check_unchanged(path: Path, target: Path, expect: bytes) -> None:
    try:
        now = target.read_bytes()
    except OSError as e:
        now = None if e.errno == errno.ENOENT else b""
    if now != expect:
        raise FileWriteError(f"{path} changed while it was being rewritten (another "
                             f"program wrote it); nothing written: run the command again")


def _reserve_backup(target: Path) -> Path:
    """Copy target to the first free name of target.bak, .bak1, ...

    The name is claimed with O_EXCL, so two writers never pick the same one
    and an older backup is never overwritten.
    """
    n = 0
    while True:
        backup = target.with_name(target.name + (".bak" if n == 0 else f".bak{n}"))
        try:
            fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            n += 1
            continue
        try:
            with os.fdopen(fd, "wb") as out, open(target, "rb") as src:
                shutil.copyfileobj(src, out)
            shutil.copystat(target, backup)
        except BaseException:
            backup.unlink(missing_ok=True)
            raise
        return backup


def write_text_atomic(path: str | os.PathLike[str], text: str, backup: bool = False,
                      expect: bytes | None = None) -> Path | None:
    """Write text to path via a temporary file and a rename.

    path may be a symbolic link: the file it points to is replaced. The new
    file keeps the old one's permissions (and owner, where allowed). A
    read-only target or a directory is refused. With backup=True and an
    existing file, the old file is first copied to the first free name of
    FILE.bak, FILE.bak1, ... (never overwriting an older backup), which is
    returned. With expect (the bytes the caller read), a file whose content
    differs by the time of the rename is left alone and an error raised.
    Call it inside ``locked(path)`` to serialise rewrites.
    """
    path = Path(path)
    check_writable(path)
    target = resolve(path)
    folder = target.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise FileWriteError(f"cannot write {path}: {e.strerror}") from None
    saved = None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            st = os.stat(target)
        except FileNotFoundError:
            st = None
        if st is not None:
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
            if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                try:
                    os.chown(tmp, st.st_uid, st.st_gid)
                except PermissionError:
                    pass  # an ordinary user cannot give files away; the mode still holds
        else:  # mkstemp creates 0600; a new file gets the usual umask mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        if expect is not None:
            _check_unchanged(path, target, expect)
        if backup and st is not None:
            saved = _reserve_backup(target)
        if expect is not None:
            _check_unchanged(path, target, expect)  # again, right before the rename
        os.replace(tmp, target)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if saved is not None:
            saved.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise FileWriteError(f"cannot write {path}: {e.strerror or e}") from None
        raise
    return saved
