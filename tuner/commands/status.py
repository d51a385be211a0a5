"""`python -m tuner status NAME [--storage DIR_OR_URI] [--json]`: trials by state and the best so far."""
from __future__ import annotations

import argparse

from tuner.runs.run_dir import add_storage_argument

HELP = "show a search run: trials by state, best so far, per condition (no Ray needed)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the run name")
    add_storage_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def main(args: argparse.Namespace) -> int:
    import json
    import sys

    from tuner.runs.run_dir import open_run
    from tuner.runs.summary import format_summary, summarize

    summary = summarize(open_run(args.name, args.storage))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    if args.json:   # the text summary lists them itself
        for warning in summary["warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
    return 0
