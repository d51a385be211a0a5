"""`python -m tuner run [--space FILE] [--store STORE] [--name NAME] [--storage DIR_OR_URI] [--address ADDRESS]
[--optuna-storage URL]`.

Runs a hyperparameter search: one Ray Tune experiment (one Optuna study) per condition of the
space, results at STORAGE/NAME. With no --store, the bundled synthetic corpus is synthesised into
./data/synthetic and its store prepared into ./data/synthetic.store, both once (cached). Without
--name every run gets a new name (`<space>-<UTC time>`); an existing --name is refused (continue
it with `python -m tuner resume NAME`).
"""
from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from model.errors import UserError
from tuner.runs.run_dir import add_storage_argument

HELP = "run a hyperparameter search (Ray Tune + Optuna); with no arguments the synthetic demo"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_SPACE = REPO / "search_spaces" / "default.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space", default=str(DEFAULT_SPACE),
                        help="search-space YAML (default: search_spaces/default.yaml; "
                             "schema in search_spaces/README.md)")
    parser.add_argument("--store", default=None,
                        help="feature store (default: the synthetic demo corpus, built once into ./data/)")
    parser.add_argument("--name", default=None, help="run name (default: <space>-<UTC time>, a new run each time)")
    add_storage_argument(parser)
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join (`auto`: the running one); default: a local Ray on loopback")
    parser.add_argument("--num-samples", type=int, default=None, help="trials per condition (overrides the space)")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="CPUs of the local Ray (default: the CPUs this process may use)")
    parser.add_argument("--top", type=int, default=1, help="best configs per condition exported at the end")
    parser.add_argument("--optuna-storage", default=None, metavar="URL",
                        help="RDB URL for the run's Optuna studies (sqlite:///studies.db, postgresql://...); "
                             "default: a journal file in the run folder")
    parser.add_argument("--sequential", action="store_true",
                        help="run the conditions' studies one after another (default: side by side, "
                             "sharing max_concurrent_trials and the cluster)")


def main(args: argparse.Namespace) -> int:
    import yaml

    from tuner.commands.common import check_top, demo_store, finish
    from tuner.search.experiment import run_search
    from tuner.runs.run_dir import RunDir
    from model.yaml_files import parse_yaml, read_text
    from tuner.space.parse import SpaceError, absolute_model_paths, load_space, parse_space

    space_path = Path(args.space)
    space = load_space(space_path)  # every problem of the space file fails here, before Ray starts
    space_text = read_text(space_path, SpaceError, "search-space file")
    raw = parse_yaml(space_text, str(space_path), SpaceError)
    changes = []
    if absolute_model_paths(raw, str(space_path)):   # trials run in their own folders
        changes.append("init_model paths made absolute")
    if args.num_samples is not None:
        if args.num_samples < 1:
            raise UserError(f"--num-samples {args.num_samples}: expected an integer >= 1")
        raw.setdefault("budget", {})["num_samples"] = args.num_samples
        changes.append(f"--num-samples {args.num_samples}")
    if changes:
        space = parse_space(raw, str(space_path))
        space_text = f"# {space_path} with {', '.join(changes)}\n" + yaml.safe_dump(raw, sort_keys=False)
    check_top(args.top)
    if args.store is None:
        store = str(demo_store().resolve())
    else:
        from tuner.storage.uris import is_uri

        # a bucket URI is kept as is; run_search checks the store (check_store) before writing anything
        store = args.store if is_uri(args.store) else str(Path(args.store).resolve())
    default_name = f"{space_path.stem}-{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M%S}"
    name = args.name if args.name is not None else default_name   # --name "" is refused, not defaulted
    run = RunDir(args.storage, name)
    with run.sole_driver():   # one driver per run (a second `run --name` or `resume` fails naming this one)
        outcome = run_search(space, space_text, store, run, args.address, args.num_cpus, args.optuna_storage,
                             side_by_side=not args.sequential)
        return finish(run, outcome, args.top)   # the export too: no `resume` may write the run meanwhile
