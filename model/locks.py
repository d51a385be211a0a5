"""One writer at a time: an exclusive lock on an output (a run folder, a store, a search run).

`writer_lock(target, what)` holds `TARGET_PARENT/.TARGET_NAME.lock` with `fcntl.flock` for as long
as the block runs. The file names its holder (host, pid, start time, command), so a second writer
fails at once with `LockHeld` naming it. The kernel releases a flock when its process dies (even
by SIGKILL), so a lock file left by a dead process is simply taken over by the next writer.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, Iterator

from model.errors import UserError


class LockHeld(UserError):
    """Another process is writing the same output."""


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of an output: a hidden sibling, so the output itself can be replaced whole."""
    target = Path(target)
    return target.parent / f".{target.name}.lock"


def command_line() -> str:
    """The command this process runs, as the user typed it: `python -m tuner` and its arguments ("" without
    an argv). Lock holders, run.json and the confirmation's plan record it."""
    return " ".join(["python -m tuner", *sys.argv[1:]]) if sys.argv else ""


def holder_info() -> dict[str, Any]:
    """Who holds a lock: this host, pid, start time and command line."""
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": command_line()}


def describe_holder(info: Any) -> str:
    """`host H, pid P, started T` from a lock file's content (whatever it holds)."""
    if not isinstance(info, dict):
        return "an unknown process"
    return f"host {info.get('host', '?')}, pid {info.get('pid', '?')}, started {info.get('started', '?')}"


def holder_gone(holder: dict[str, Any]) -> bool:
    """True when a lock's holder is a process of this host that no longer runs."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def current_holder(target: str | os.PathLike) -> dict[str, Any] | None:
    """Who holds the lock of `target` now ({} when its file does not say), None when nobody does.

    Only looks: a missing lock file is not created. A file left by a process of this host that is gone is
    free without trying it (a try, a shared flock, would for an instant refuse a writer starting then)."""
    try:
        handle = open(lock_path(target))
    except OSError:
        return None
    with handle:
        holder = _read_holder(handle)
        holder = holder if isinstance(holder, dict) else {}
        if holder_gone(holder):
            return None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return holder
        except OSError:
            return None
        return None   # free: closing the file releases the shared lock


def _read_holder(handle) -> Any:
    try:
        handle.seek(0)
        return json.loads(handle.read() or "null")
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def writer_lock(target: str | os.PathLike, what: str, wait: bool = False) -> Iterator[dict[str, Any]]:
    """Hold the lock of `target` (`what` names the output in the message); LockHeld if taken.

    With wait=True a held lock is waited for instead. Yields the previous holder's info when a lock
    left by a dead process was taken over, else {}.
    """
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = _read_holder(handle)
            handle.close()
            raise LockHeld(f"{target}: {what} is in use by another process ({describe_holder(holder)}); "
                           f"wait for it to finish or choose another {what}") from None
        except OSError as exc:
            handle.close()
            raise UserError(f"{path}: cannot lock ({exc.strerror}); is the folder on a filesystem "
                            "without file locks?") from None
        try:   # the file may have been removed by its last holder between our open and flock: retry
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        previous = _read_holder(handle)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder_info()) + "\n")
        handle.flush()
        yield previous if isinstance(previous, dict) else {}
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)   # while still holding it: a waiter that opened the old inode retries
        handle.close()
