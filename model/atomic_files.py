"""Durable, atomic writes: a reader (or a crash) sees the old file or folder or the new one, never a mix.

`atomic_write(path, data)` writes a file: a temporary sibling is written, flushed and fsynced,
renamed over `path`, and the folder is fsynced so that the rename itself survives a power loss.
`replace_dir(tmp, target)` does the same for a finished folder built beside its target (a feature
store, a checkpoint, a corpus). `check_output_file` / `check_output_dir` refuse a target that can
never be written, before any work is spent on its content.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from model.errors import UserError

Writer = Callable[[BinaryIO], None]
FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(UserError):
    """No space left where an output is written (the atomic writes left nothing partial behind)."""


def disk_full(folder: str | os.PathLike) -> DiskFull:
    """The error for a write below `folder` that failed for want of space."""
    return DiskFull(f"{folder}: the disk holding it is full (no space left on device); nothing partial was "
                    "left there: free some space and run the command again")


def no_space_left(exc: BaseException, folder: str | os.PathLike) -> bool:
    """Whether `exc`, raised writing below `folder`, came from a full disk: an OSError saying so, or another
    error (torch.save's "unexpected pos") while the disk has no space left."""
    if isinstance(exc, OSError):
        return exc.errno in FULL_DISK_ERRNOS
    try:
        stat = os.statvfs(folder)
    except OSError:
        return False
    return stat.f_bavail == 0


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make the entries of `folder` (creations, renames) durable."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes | str | Writer) -> Path:
    """Write `data` (bytes, text as UTF-8, or a function writing to a binary file) to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; an ordinary file is what a user expects
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        full = isinstance(exc, Exception) and no_space_left(exc, path.parent)   # before the unlink frees space
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise disk_full(path.parent) from None
        raise
    return path


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask is a global swap)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_tree(folder: str | os.PathLike) -> None:
    """fsync every file and folder below `folder` (and itself), deepest first."""
    for dirpath, _, filenames in os.walk(folder, topdown=False):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def replace_dir(tmp: str | os.PathLike, target: str | os.PathLike, old: str | os.PathLike | None = None,
                overwrite: bool = True) -> Path:
    """Move the finished folder `tmp` to `target` durably, replacing what is there.

    An existing target is first renamed to `old` (default: a hidden sibling), then `tmp` is renamed
    into place and `old` removed, so a crash leaves either the old or the new folder (a crash
    between the two renames leaves the old one at `old`). With overwrite=False only an absent or
    empty target is replaced, and OSError is raised otherwise.
    """
    tmp, target = Path(tmp), Path(target)
    fsync_tree(tmp)
    if not overwrite:
        os.rename(tmp, target)   # atomic; replaces an empty folder, fails on a non-empty one
        fsync_dir(target.parent)
        return target
    old = Path(old) if old is not None else target.with_name(f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    if target.exists():
        if old.exists():   # a complete target exists: `old` is a leftover
            shutil.rmtree(old)
        os.rename(target, old)
    # else an `old` left by a crash mid-swap is the only complete copy: kept until tmp is in place
    os.rename(tmp, target)
    fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
    return target


@contextlib.contextmanager
def building_dir(target: str | os.PathLike, old: str | os.PathLike | None = None) -> Iterator[Path]:
    """A fresh hidden folder beside `target` to build it in: when the block ends without an error, the folder
    replaces `target` (`replace_dir`, with `old`); it is removed whatever happens. A failure on a full disk
    (`no_space_left`, looked at while the partial folder still holds the space) is DiskFull naming `target`'s
    folder."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield tmp
        replace_dir(tmp, target, old=old)
    except Exception as exc:
        if no_space_left(exc, target.parent):   # before the removal below frees space
            raise disk_full(target.parent) from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- output checks ------------------------------------------------------------------------------
def _writable_parent(path: Path, option: str) -> None:
    """The nearest existing ancestor of `path` must be a folder we may create entries in."""
    parent = path.parent
    while not parent.exists():
        if parent.is_symlink():
            raise UserError(f"{option} {path}: {parent} is a broken symbolic link")
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{option} {path}: {parent} is a file, not a folder; choose a path in a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: {parent} is not writable; choose a folder you may write to")


def check_output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse (UserError) a file target that cannot be written: a folder, under a file, not writable."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder; expected a file path (a file inside it is fine)")
    if path.exists() and not os.access(path, os.W_OK) and not os.access(path.parent, os.W_OK):
        raise UserError(f"{option} {path}: is not writable")
    _writable_parent(path, option)
    return path


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse (UserError) a folder target that cannot be written: a file, under a file, not writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path}: is a file; expected a folder (a new or an existing one)")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: the folder is not writable")
    _writable_parent(path, option)
    return path
