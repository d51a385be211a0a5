"""`python -m tuner COMMAND ...`: dispatch to the command modules in tuner.commands."""
from __future__ import annotations

import argparse
import importlib
import sys

from model.errors import UserError

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
    "tensorboard": "tensorboard",
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
    try:
        return int(args._main(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
