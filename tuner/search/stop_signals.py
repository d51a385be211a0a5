"""Ctrl+C (SIGINT) and SIGTERM stop a command the same way; a second signal stops it at once.

SIGTERM is what Slurm, Kubernetes and cloud preemption send, so it must stop a command as cleanly as
Ctrl+C does. `handled()` (entered by tuner.cli.main around every command, in the main thread) installs
one handler for both; a command started with SIGINT ignored (a background job of a non-interactive
shell) keeps ignoring it, and SIGTERM still stops it.
- The first signal, inside `tune_stop()` (a Ray Tune fit): sets the event Tune's loop watches, so Tune
  ends its step, saves the experiment state one last time and returns, as it does on Ctrl+C (given to
  Ray through its private `ray.tune.tune._setup_signal_catching` hook: Ray installs its own handler
  only for SIGINT and only in the main thread, and side-by-side studies run in threads). Elsewhere it
  raises `Stopped` (a KeyboardInterrupt): `train` keeps its last checkpoint, other commands unwind, closing
  their process pools; except inside `held()` blocks, where it waits until the block ends. Either way the command exits with `exit_code()`: 128 + the signal (130 Ctrl+C, 143
  SIGTERM), after `handled()` shut its Ray down (Ray's processes and trial workers end with it).
- A second signal: every process the command started that is still its descendant (Ray's processes,
  trial workers, process pools) is frozen (SIGSTOP, so none forks again) and killed (SIGKILL), and the
  command exits 128 + the signal at once. What is saved is what a killed driver leaves: `resume`,
  `confirm` and `train --resume` continue from it.
- `ray.init` sets Ray's own SIGTERM handlers (Python: kill Ray's processes mid-step and exit 1; C++: a stack
  dump, then an abort 3 s later): `start_ray` starts Ray inside `ray_start()`, which keeps ours and lets a
  signal that came during Ray's start-up act once Ray is up.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_handling = False                        # handlers installed by handled()
_received: int | None = None             # the first signal's number
_event: threading.Event | None = None    # set by the first signal during a Tune fit (tune_stop)
_deferred = False                        # in held(): the first signal waits until the block ends


class Stopped(KeyboardInterrupt):
    """Raised by the first SIGINT or SIGTERM outside a Tune fit."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code() -> int:
    """128 + the signal that stopped the command: 130 for Ctrl+C (also when no signal came), 143 for SIGTERM."""
    return 128 + (_received or signal.SIGINT)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _install() -> dict[int, object]:
    """Our handler for SIGTERM and (unless it is ignored) SIGINT; returns the handlers it replaced."""
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        if s == signal.SIGTERM or previous[s] is not signal.SIG_IGN:
            signal.signal(s, _on_signal)
    return previous


@contextmanager
def handled() -> Iterator[None]:
    """Around a whole command: the handlers installed; at the end Ray (if the command started or joined
    one) shut down and the previous handlers back."""
    global _handling, _received
    if not _in_main_thread():
        yield
        return
    previous, _handling, _received = _install(), True, None
    try:
        yield
    finally:
        try:
            with held(act_after=False):   # the command is ending: a first signal now changes nothing
                _shutdown_ray()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            _handling = False


def _shutdown_ray() -> None:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()   # stops the local Ray's processes (raylet, GCS, agents) and the trial workers


@contextmanager
def held(act_after: bool = True) -> Iterator[None]:
    """A block the first signal must not interrupt; it acts (raises Stopped) when the block ends. For library
    calls that wait on their own threads, which an exception raised inside them can leave waiting forever
    (TensorBoard's writer: `flush` and `close` join its thread)."""
    global _deferred
    if _deferred or not _handling:
        yield
        return
    _deferred = True
    try:
        yield
    finally:
        _deferred = False
    if act_after and _received is not None:
        raise Stopped(_received)


@contextmanager
def ray_start() -> Iterator[None]:
    """Around `ray.init`: a signal during Ray's start-up acts once Ray is up, and SIGTERM stays ours.

    Ray's Python handlers (which kill Ray's processes and exit) are held off (private
    `ray._private.utils.set_sigterm_handler`); the crash handler Ray's C++ core worker installs for SIGTERM
    (absl's: it prints a stack dump and arms an alarm that aborts the process 3 s later) is replaced after."""
    if not _handling:
        yield
        return
    import ray._private.utils as ray_utils

    original, ray_utils.set_sigterm_handler = ray_utils.set_sigterm_handler, lambda handler: None
    with held():
        try:
            yield
        finally:
            ray_utils.set_sigterm_handler = original
            signal.signal(signal.SIGTERM, _on_signal)
            if _received is not None:
                signal.alarm(0)   # the alarm of the crash handler, had the signal reached it


@contextmanager
def tune_stop() -> Iterator[threading.Event]:
    """Ray Tune fits inside this block (in any thread) watch the yielded event; the first signal sets it."""
    import ray.tune.tune as tune_module

    global _event, _received
    previous = None
    if not _handling and _in_main_thread():   # a search started from Python, not by the CLI
        previous, _received = _install(), None
    event = threading.Event()
    if _received is not None:
        event.set()   # a signal came just before: start nothing
    original = tune_module._setup_signal_catching
    tune_module._setup_signal_catching = lambda: event   # private: Tune's loop stops when it is set
    _event = event
    try:
        yield event
    finally:
        _event = None
        tune_module._setup_signal_catching = original
        for s, handler in (previous or {}).items():
            signal.signal(s, handler)


def _on_signal(signum: int, frame) -> None:
    global _received
    if _received is not None:
        _stop_at_once(signum)
    _received = signum
    name = signal.Signals(signum).name
    if _event is not None:
        # os.write: the main thread may be inside a print (a buffered write is not reentrant)
        os.write(2, f"\n[tuner] {name}: stopping; the state is saved (a second signal stops at once)\n".encode())
        _event.set()
    elif not _deferred:
        raise Stopped(signum)


def _stop_at_once(signum: int) -> None:
    os.write(2, f"\n[tuner] {signal.Signals(signum).name} again: stopping at once\n".encode())
    kill_descendants()
    os._exit(128 + signum)


def kill_descendants() -> None:
    """SIGSTOP every descendant of this process (again until no new one appears), then SIGKILL them all."""
    frozen: set[int] = set()
    while new := descendants(os.getpid()) - frozen:
        for pid in new:
            _send(pid, signal.SIGSTOP)
        frozen |= new
    for pid in frozen:
        _send(pid, signal.SIGKILL)


def descendants(root: int) -> set[int]:
    """The processes below `root` in the process tree (from /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])   # after pid (comm): state ppid
        except (OSError, IndexError, ValueError):
            continue   # gone meanwhile
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _send(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
