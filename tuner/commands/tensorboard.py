"""`python -m tuner tensorboard NAME [--storage DIR_OR_URI] [--launch] [--port P]`: TensorBoard of a run."""
from __future__ import annotations

import argparse

from tuner.run_dir import add_storage_argument

HELP = "print (or --launch) the tensorboard command for a run's curves and HParams dashboard"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the run name")
    add_storage_argument(parser)
    parser.add_argument("--launch", action="store_true", help="run tensorboard instead of printing the command")
    parser.add_argument("--port", type=int, default=6006, help="port for --launch (default 6006)")


def command(logdir: str, port: int) -> list[str]:
    """The tensorboard command line for a run folder (served on loopback only)."""
    import shutil
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / "tensorboard"  # the venv's own tensorboard script
    on_path = shutil.which("tensorboard")
    if beside.exists():
        program = [str(beside)]
    elif on_path:
        program = [on_path]
    else:
        program = [sys.executable, "-m", "tensorboard.main"]
    return [*program, "--logdir", logdir, "--host", "127.0.0.1", "--port", str(port)]


def main(args: argparse.Namespace) -> int:
    import shlex
    import subprocess

    from tuner.run_dir import open_run

    run = open_run(args.name, args.storage)
    cmd = command(run.uri, args.port)
    if not args.launch:
        print(" ".join(shlex.quote(c) for c in cmd))
        return 0
    return subprocess.call(cmd)
