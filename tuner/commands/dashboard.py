"""`python -m tuner dashboard NAME [--port P] [--storage DIR_OR_URI]`: optuna-dashboard on the run's studies.

Serves on 127.0.0.1 only (forward the port over SSH to look from elsewhere) until Ctrl+C or SIGTERM. A journal
study file is read live; for a bucket run it is the copy in the run folder, fetched when the command
starts. With `run --optuna-storage URL` the dashboard shows every study in that database.
"""
from __future__ import annotations

import argparse

from tuner.runs.run_dir import add_storage_argument

HELP = "serve optuna-dashboard on 127.0.0.1 for a run's Optuna studies (one per condition)"
HOST = "127.0.0.1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the run name")
    add_storage_argument(parser)
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt   # SIGTERM stops the server like Ctrl+C


def main(args: argparse.Namespace) -> int:
    import signal

    from optuna_dashboard import run_server

    from model.errors import UserError
    from tuner.runs.run_dir import open_run
    from tuner.runs.studies import check_storage_kept, load_studies, open_storage, storage_exists, storage_setting

    if not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: expected a port number from 1 to 65535")
    run = open_run(args.name, args.storage)
    check_storage_kept(run, run.read_manifest())
    studies = load_studies(run)  # fetches a bucket run's journal; refuses a run without studies
    setting = storage_setting(run.read_manifest())
    if not storage_exists(run, setting):   # never created by a reading command
        raise UserError(f"run {run.name}: no condition has begun yet, so its Optuna storage ({setting}) does not "
                        "exist yet; start the dashboard once the search runs")
    storage = open_storage(run, setting)
    print(f"optuna-dashboard for run {run.name} ({len(studies)} studies: {', '.join(studies) or 'none yet'})")
    print(f"open http://{HOST}:{args.port}/dashboard   (Ctrl+C stops it)", flush=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)   # even when started with SIGINT ignored
    signal.signal(signal.SIGTERM, _stop)
    try:
        run_server(storage, host=HOST, port=args.port)
    except OSError as exc:
        raise UserError(f"--port {args.port}: cannot listen on {HOST}: {exc.strerror}; choose another port") from None
    except KeyboardInterrupt:  # Ctrl+C or SIGTERM (bottle usually catches it itself and returns)
        pass
    print("dashboard stopped")
    return 0
