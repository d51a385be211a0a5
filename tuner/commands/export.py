"""`python -m tuner export NAME [--top N] [--out FILE] [--force] [--by search|confirmed]`: the best configs as
train-ready YAML (`--by confirmed`: ranked by the confirmation's mean validation CCC over seeds, the
test CCC beside it).

FILE (default STORAGE/NAME/best.yaml) is the overall best config; with several conditions or
--top > 1 each (condition, rank) also gets `<stem>.<condition>.rank<k>.yaml` next to it. Every
file works with `python -m tuner train --config FILE` unchanged (non-config data is under
`metadata`). Existing files are kept unless --force.
"""
from __future__ import annotations

import argparse

from tuner.runs.run_dir import add_storage_argument

HELP = "export the best configs of a run (per condition) as YAML for `python -m tuner train --config`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the run name")
    add_storage_argument(parser)
    parser.add_argument("--top", type=int, default=1, help="best configs per condition (default 1)")
    parser.add_argument("--out", default=None, help="output YAML file (default STORAGE/NAME/best.yaml)")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.add_argument("--by", choices=("search", "confirmed"), default="search",
                        help="rank by the search's metric (default) or by the confirmation's mean validation CCC "
                             "over seeds, test CCC shown beside it (after `python -m tuner confirm NAME`)")


def main(args: argparse.Namespace) -> int:
    from model.atomic_files import check_output_file
    from model.errors import UserError
    from tuner.commands.common import check_top
    from tuner.runs.export import export_best, export_confirmed
    from tuner.runs.run_dir import open_run

    check_top(args.top)
    run = open_run(args.name, args.storage)
    if args.out is None and run.local is None:
        raise UserError(f"{run} is remote: give --out FILE")
    out = check_output_file(args.out) if args.out else run.local / "best.yaml"
    export = export_confirmed if args.by == "confirmed" else export_best
    for path in export(run, out, top=args.top, force=args.force):
        print(path)
    return 0
