"""Helpers several commands share (a command never imports another command)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model.errors import UserError
from tuner.runs.run_dir import RunDir

DEMO_CORPUS = Path("data") / "synthetic"
DEMO_STORE = Path("data") / "synthetic.store"


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """`--set key=value [key=value ...]`, repeatable: config overrides (model.config.TrainConfig.load)."""
    parser.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config keys: --set temporal=cnn epochs=5 (several pairs, and "
                             "repeatable)")


def demo_store() -> Path:
    """The default synthetic corpus and its store under ./data/, built once and reused."""
    from model.store_build import prepare_store
    from model.synth import synthesize_corpus

    corpus = synthesize_corpus(DEMO_CORPUS)
    report = prepare_store(corpus, DEMO_STORE, progress=False, wait=True)
    print(f"[tuner] store {DEMO_STORE}: {report['status']} ({report['labeled']} labelled, "
          f"{report['unlabeled']} unlabeled utterances)")
    return DEMO_STORE


def check_top(top: int) -> None:
    """--top (best configs per condition) must be at least 1."""
    if top < 1:
        raise UserError(f"--top {top}: expected an integer >= 1")


def finish(run: RunDir, outcome: dict, top: int) -> int:
    """Print the best configs, where results and TensorBoard logs are, and export the best configs."""
    import shlex

    import ray

    from tuner.runs.config_errors import error_lines
    from tuner.runs.export import attribute_file, export_best
    from tuner.runs.summary import format_summary, summarize
    from tuner.storage.uris import display_uri

    if ray.is_initialized():
        ray.shutdown()
    print()
    summary = summarize(run)
    print(format_summary(summary))
    print(f"results:     {run}")
    if run.local is not None:
        print(f"tensorboard: tensorboard --logdir {run.local}   (or: python -m tuner tensorboard {run.name})")
    else:  # TensorBoard reads local folders: the command mirrors the bucket's event files first
        storage = shlex.quote(display_uri(run.storage))
        print(f"tensorboard: python -m tuner tensorboard {run.name} --storage {storage} --launch")
        print(f"export:      python -m tuner export {run.name} --storage {storage} --out best.yaml")
    if outcome.get("interrupted"):
        from tuner.search.stop_signals import exit_code

        print(f"interrupted: continue with `python -m tuner resume {run.name}`")
        return exit_code()   # 130 Ctrl+C, 143 SIGTERM
    if summary["config_errors"] and not any(c["best"] for c in summary["conditions"]):
        for line in error_lines(summary["config_errors"]):   # nothing trained: what the user must change
            print(f"error: {line}", file=sys.stderr)
        return 2
    if run.local is not None:
        try:
            paths = export_best(run, run.local / "best.yaml", top=top, force=True)
        except UserError as exc:  # no trial reported a result: every one of them failed
            print(f"error: {exc}; the trials' errors are in their error.txt files under {run.uri}",
                  file=sys.stderr)
            return 1
        else:
            models = attribute_file(paths[0])
            per_attribute = paths[-1] == models   # a search with one study per attribute
            paths = paths[:-1] if per_attribute else paths
            print(f"best configs: {paths[0]}" + (f" (+{len(paths) - 1} per condition)" if len(paths) > 1 else ""))
            if per_attribute:
                print(f"per attribute: python -m tuner predict --attribute-from {models} AUDIO... --out preds.csv")
            import yaml

            print(f"retrain:     {yaml.safe_load(paths[0].read_text())['metadata']['retrain']}")
    return 0
