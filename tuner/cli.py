"""`python -m tuner COMMAND ...`: dispatch to the command modules in tuner.commands."""
from __future__ import annotations

import argparse
import datetime
import importlib
import os
import sys
import traceback
from pathlib import Path

from model.cpu_memory import keep_freed_blocks_in_malloc
from model.atomic_files import FULL_DISK_ERRNOS, disk_full
from model.errors import UserError

LOG_DIR_ENV = "DEEPEMOCLUSTER_LOG_DIR"
# command name -> module in tuner.commands (each defines HELP, add_arguments, main)
COMMANDS = {
    "synth": "synth",
    "prepare": "prepare",
    "train": "train",
    "evaluate": "evaluate",
    "predict": "predict",
    "import-reference": "import_reference",
    "run": "run",
    "status": "status",
    "resume": "resume",
    "export": "export",
    "confirm": "confirm",
    "tensorboard": "tensorboard",
    "dashboard": "dashboard",
    "report": "report",
    "sync-store": "sync_store",
}


def _available() -> dict:
    modules = {}
    for name, module in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(f"tuner.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"tuner.commands.{module}":
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tuner", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _available().items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv and "run" in _available():
        argv = ["run"]  # the main job: a search on the bundled synthetic default
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from tuner.search import stop_signals

    with stop_signals.handled():   # SIGTERM stops a command as Ctrl+C does; its Ray is shut down at the end
        try:
            keep_freed_blocks_in_malloc()   # the process's allocator: an entry point's choice (model.cpu_memory)
            return int(args._main(args) or 0)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:   # Ctrl+C or SIGTERM (tuner.search.stop_signals.Stopped)
            print("interrupted", file=sys.stderr)
            return stop_signals.exit_code()
        except OSError as exc:
            if exc.errno not in FULL_DISK_ERRNOS:
                return internal_error(args.command, argv, exc)
            print(f"error: {disk_full(output_of(args, exc))}", file=sys.stderr)
            return 2
        except Exception as exc:  # noqa: BLE001 - a bug: one line here, the traceback in a log file
            return internal_error(args.command, argv, exc)


def internal_error(command: str, argv: list[str], exc: Exception) -> int:
    """A bug: one line naming the log file that holds the traceback; exit code 1."""
    log = write_crash_log(command, argv)
    where = f"the traceback is in {log}" if log else "the traceback could not be written to a log file"
    print(f"internal error (a bug, not your input): {exc.__class__.__name__}: {exc}; {where}; "
          "please report it with that file", file=sys.stderr)
    return 1


def output_of(args: argparse.Namespace, exc: OSError) -> str:
    """Where a command that ran out of disk space was writing: its output, else the folder of the file the
    error names (a temporary sibling of the output, already removed, is not worth naming)."""
    for where in (getattr(args, "out", None), getattr(args, "storage", None)):
        if where:
            return str(where)
    return str(Path(exc.filename).parent) if exc.filename else os.getcwd()


def log_dir() -> Path:
    """Where internal-error logs go: $DEEPEMOCLUSTER_LOG_DIR, else ~/.cache/deepemocluster/logs."""
    env = os.environ.get(LOG_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "deepemocluster" / "logs"


def write_crash_log(command: str, argv: list[str]) -> Path | None:
    """Write the current exception's traceback to a new log file; its path (None if nothing is writable)."""
    import tempfile

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    text = (f"python -m tuner {' '.join(argv)}\ncommand: {command}\ncwd: {os.getcwd()}\n"
            f"python: {sys.version.split()[0]}\n\n{traceback.format_exc()}")
    for folder in (log_dir(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"tuner-{command}-{stamp}-{os.getpid()}.log"
            path.write_text(text)
            return path
        except OSError:
            continue
    return None
