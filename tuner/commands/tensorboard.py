"""`python -m tuner tensorboard NAME [--storage DIR_OR_URI] [--launch] [--port P] [--mirror DIR]`: TensorBoard of a run.

TensorBoard reads local folders. A run in a local folder (or file://) is served in place; a run in
a bucket (s3://, gs://) is mirrored first: its TensorBoard event files (only those: no checkpoints)
are copied into a local folder (--mirror, default ~/.cache/deepemocluster/tensorboard/NAME) and
TensorBoard reads the mirror. With --launch the mirror is refreshed every --sync-every seconds
while TensorBoard runs (files that are new or grew are copied again, atomically).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from tuner.runs.run_dir import add_storage_argument

HELP = "print (or --launch) the tensorboard command for a run's curves and HParams dashboard"
EVENTS = "events.out.tfevents."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the run name")
    add_storage_argument(parser)
    parser.add_argument("--launch", action="store_true", help="run tensorboard instead of printing the command")
    parser.add_argument("--port", type=int, default=6006, help="port for --launch (default 6006)")
    parser.add_argument("--mirror", default=None,
                        help="local folder for a bucket run's event files (default ~/.cache/deepemocluster/tensorboard/NAME)")
    parser.add_argument("--sync-every", type=float, default=60.0,
                        help="with --launch on a bucket run: seconds between mirror refreshes (default 60)")


def command(logdir: str, port: int) -> list[str]:
    """The tensorboard command line for a run folder (served on loopback only)."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / "tensorboard"  # the venv's own tensorboard script
    on_path = shutil.which("tensorboard")
    if beside.exists():
        program = [str(beside)]
    elif on_path:
        program = [on_path]
    else:
        program = [sys.executable, "-m", "tensorboard.main"]
    return [*program, "--logdir", logdir, "--host", "127.0.0.1", "--port", str(port)]


def mirror_events(run, dest: Path) -> int:
    """Copy the run's event files that `dest` lacks or holds at another size (same layout); returns how many."""
    from model.atomic_files import atomic_write

    copied = 0
    for rel, size in run.walk():
        if not rel.rsplit("/", 1)[-1].startswith(EVENTS):
            continue
        target = dest / rel
        if target.is_file() and target.stat().st_size == size:
            continue
        atomic_write(target, run.read_bytes(rel))
        copied += 1
    return copied


def main(args: argparse.Namespace) -> int:
    import shlex
    import subprocess
    import sys

    from model.errors import UserError
    from tuner.runs.run_dir import open_run

    if not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: expected a port number from 1 to 65535")
    if args.sync_every <= 0:
        raise UserError(f"--sync-every {args.sync_every:g}: expected a number of seconds > 0")
    run = open_run(args.name, args.storage)
    mirror = None
    if run.local is None:  # a bucket: TensorBoard reads a local mirror of the event files
        mirror = Path(args.mirror).expanduser() if args.mirror else \
            Path.home() / ".cache" / "deepemocluster" / "tensorboard" / run.name
        copied = mirror_events(run, mirror)
        print(f"[tuner] {copied} event file(s) copied from {run} to {mirror}", file=sys.stderr)
    cmd = command(str(mirror or run.local), args.port)
    if not args.launch:
        print(" ".join(shlex.quote(c) for c in cmd))
        return 0
    proc = subprocess.Popen(cmd)
    try:
        while True:
            try:
                return proc.wait(timeout=args.sync_every if mirror else None)
            except subprocess.TimeoutExpired:
                mirror_events(run, mirror)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
