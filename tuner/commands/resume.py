"""`python -m tuner resume NAME [--storage DIR_OR_URI] [--address ADDRESS]`: continue a stopped run.

Finished conditions are kept; the interrupted condition's Ray experiment is restored with
Tuner.restore(resume_unfinished=True, resume_errored=True): finished trials are kept, unfinished
and errored ones continue from their last checkpoint and the Optuna searcher's state (its study)
comes back; conditions that never started are started.
"""
from __future__ import annotations

import argparse

from tuner.runs.run_dir import add_storage_argument

HELP = "continue a search run whose driver stopped (even killed): finished trials are kept"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the run name")
    add_storage_argument(parser)
    parser.add_argument("--address", default=None, help="Ray cluster to join (`auto`: the running one)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray")
    parser.add_argument("--top", type=int, default=1, help="best configs per condition exported at the end")


def main(args: argparse.Namespace) -> int:
    from tuner.commands.common import check_top, finish
    from tuner.search.experiment import resume_search
    from tuner.runs.run_dir import open_run

    check_top(args.top)  # before the resume: finish would find nothing to export
    run = open_run(args.name, args.storage)
    with run.sole_driver():
        outcome = resume_search(run, args.address, args.num_cpus)
        return finish(run, outcome, args.top)   # the export too: no other driver may write the run meanwhile
