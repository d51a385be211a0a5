"""`python -m tuner report NAME [--out DIR] [--storage DIR_OR_URI]`: report.html and report.md of a run."""
from __future__ import annotations

import argparse

from tuner.runs.run_dir import add_storage_argument

HELP = "write a run's report: report.html (charts, readable offline) and report.md (the tables)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the run name")
    add_storage_argument(parser)
    parser.add_argument("--out", default=None, help="folder for report.html and report.md (default: the run folder)")


def main(args: argparse.Namespace) -> int:
    from model.atomic_files import check_output_dir
    from tuner.answers.report.page import write_report
    from tuner.runs.run_dir import open_run

    if args.out is not None:
        check_output_dir(args.out)   # before the report is built
    page, text = write_report(open_run(args.name, args.storage), args.out)
    print(f"report: {page}\ntables: {text}")
    return 0
