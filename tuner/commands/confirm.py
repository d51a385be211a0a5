"""`python -m tuner confirm NAME [--top K] [--seeds N] [--split S ...] [--baseline FILE ...]`.

Retrains the top K configurations of every condition of run NAME, and each baseline config, with N
seeds each, full epochs and no early stopping, as a Ray Tune experiment at STORAGE/NAME/confirm/;
evaluates each seed's best model on the validation and test splits and writes confirm.json and the
table confirm.md there (tuner.answers.confirm.results documents confirm.json). Running it again continues
an interrupted confirmation (finished seeds are kept); options left out are taken from it. A seed whose
configuration cannot train on the store fails once, not retried (tuner.runs.config_errors): exit 2 with one
`error:` line per distinct message. This module parses the arguments and runs the steps of tuner.answers.confirm.
"""
from __future__ import annotations

import argparse

from tuner.runs.run_dir import add_storage_argument

MAX_SEEDS = 100   # bounds that stop a typo (an extra zero) from planning weeks of trainings
MAX_TOP = 20
HELP = "retrain a run's best configs (and baselines) with several seeds; test CCC with intervals and significance"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tuner.answers.confirm.plan import DEFAULT_SEEDS, DEFAULT_TOP
    from tuner.answers.confirm.significance import RESAMPLES

    parser.add_argument("name", help="the run name")
    add_storage_argument(parser)
    parser.add_argument("--top", type=int, default=None,
                        help=f"configurations per condition (default {DEFAULT_TOP}, at most {MAX_TOP})")
    parser.add_argument("--seeds", type=int, default=None,
                        help=f"seeds per configuration (default {DEFAULT_SEEDS}: seeds 1..N; at most {MAX_SEEDS})")
    parser.add_argument("--split", action="append", default=None, metavar="SPLIT",
                        help="test split (repeatable; default: every test split of the store)")
    parser.add_argument("--baseline", action="append", default=None, metavar="FILE",
                        help="a baseline config in `train --config` format (repeatable), e.g. "
                             "search_spaces/baselines/deepemocluster_act.yaml")
    parser.add_argument("--resamples", type=int, default=RESAMPLES,
                        help=f"resamples of the bootstraps over test speakers (the method-level test) and over "
                             f"utterances (default {RESAMPLES})")
    parser.add_argument("--partial", action="store_true",
                        help="confirm a search that was stopped before its conditions finished (its finished trials)")
    parser.add_argument("--address", default=None, help="Ray cluster to join (`auto`: the running one)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray")


def main(args: argparse.Namespace) -> int:
    import sys

    from tuner.answers.confirm.plan import check_search_done, choose_plan
    from tuner.answers.confirm.results import collect, config_error_lines, write_results
    from tuner.answers.confirm.run import run_confirmation
    from tuner.runs.confirm_files import CONFIRM_FILE, EXPERIMENT, TABLE_FILE
    from tuner.runs.run_dir import open_run
    from tuner.search.stop_signals import exit_code
    from tuner.storage.uris import display_uri

    check_arguments(args)
    run = open_run(args.name, args.storage)
    manifest = run.read_manifest()
    check_search_done(run, manifest, args.partial)
    with run.sole_driver():   # one driver per run: not while `resume` or another `confirm` drives it
        plan = choose_plan(run, manifest, args.top, args.seeds, args.split, args.baseline)
        outcome = run_confirmation(run, plan, args.address, args.num_cpus)
        confirm = collect(run, plan, resamples=args.resamples)
        table = write_results(run, confirm)   # under the lock: no other `confirm` may write them meanwhile
    print()
    print(table)
    print(f"results: {display_uri(run.child_uri(EXPERIMENT, CONFIRM_FILE))}, "
          f"{display_uri(run.child_uri(EXPERIMENT, TABLE_FILE))}")
    if outcome["interrupted"]:
        print(f"interrupted: continue with `python -m tuner confirm {run.name}`", file=sys.stderr)
        return exit_code()   # 130 Ctrl+C, 143 SIGTERM
    config_errors = config_error_lines(run, confirm)
    for line in config_errors:   # what the user must change: confirming again fails the same way
        print(f"error: {line}", file=sys.stderr)
    if outcome["errored"]:
        print(f"error: {len(outcome['errored'])} training(s) failed (trials {', '.join(outcome['errored'])}); "
              f"their error.txt files are under {display_uri(run.child_uri(EXPERIMENT))}; `python -m tuner confirm "
              f"{run.name}` retries them", file=sys.stderr)
    return 2 if config_errors else 1 if outcome["errored"] else 0


def check_arguments(args: argparse.Namespace) -> None:
    """--top, --seeds and --resamples within their bounds (UserError naming the option)."""
    from model.errors import UserError
    from tuner.commands.common import check_top

    if args.top is not None:
        check_top(args.top)
        if args.top > MAX_TOP:
            raise UserError(f"--top {args.top}: expected an integer <= {MAX_TOP} (each configuration is retrained "
                            "with every seed; the ones below the top few are not worth the trainings)")
    if args.seeds is not None and not 1 <= args.seeds <= MAX_SEEDS:
        raise UserError(f"--seeds {args.seeds}: expected an integer >= 1 and <= {MAX_SEEDS} (each seed is a full "
                        "training of every configuration; the interval narrows little beyond a few dozen)")
    if args.resamples < 100:
        raise UserError(f"--resamples {args.resamples}: expected an integer >= 100")
