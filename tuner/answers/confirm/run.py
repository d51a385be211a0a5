"""Confirmation of a search: its best configurations (and baselines, tuner.answers.confirm.plan) retrained
with several seeds, as one Ray Tune experiment at RUN/confirm/ (a grid over configuration x seed, the run's
trial resources, GPU slices included; each trial: tuner.answers.confirm.trial). `confirm NAME` again
continues the same experiment (Tuner.restore: finished seeds are kept, unfinished ones continue from their
last checkpoint); tuner.answers.confirm.results turns the seeds' evaluations into confirm.json.
"""
from __future__ import annotations

from typing import Any

from tuner.answers.confirm.trial import confirm_trial
from tuner.runs.confirm_files import EXPERIMENT
from tuner.runs.run_dir import RunDir


def make_confirm_tuner(space, run: RunDir, store: str, plan: dict[str, Any]):
    """A Tuner over the grid configuration x seed: FIFO (no early stopping), the run's resources."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback

    from tuner.search.experiment import MAX_FAILURES, REUSE_ACTORS, trial_dirname
    from tuner.runs.result_log import ResultJsonLogger
    from tuner.runs.tensorboard_log import TensorBoardCallback

    param_space = {"config_id": tune.grid_search([c["id"] for c in plan["configurations"]]),
                   "seed": tune.grid_search(plan["seeds"])}
    tune_config = tune.TuneConfig(num_samples=1, max_concurrent_trials=space.resources.max_concurrent_trials or None,
                                  reuse_actors=REUSE_ACTORS, trial_dirname_creator=trial_dirname)
    run_config = tune.RunConfig(
        name=EXPERIMENT, storage_path=run.uri,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),   # the last one holds the evaluation
        failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
        callbacks=[ResultJsonLogger(), CSVLoggerCallback(),
                   TensorBoardCallback(["val_ccc_mean"], ["max"], ["config_id", "seed"])])
    return tune.Tuner(make_confirm_trainable(space, run, store, plan), param_space=param_space,
                      tune_config=tune_config, run_config=run_config)


def make_confirm_trainable(space, run: RunDir, store: str, plan: dict[str, Any]):
    from tuner.search.experiment import make_trainable

    return make_trainable(space, store, confirm_trial, splits=plan["splits"], storage=run.storage, run_name=run.name,
                          configurations={c["id"]: c["config"] for c in plan["configurations"]})


def run_confirmation(run: RunDir, plan: dict[str, Any], address: str | None,
                     num_cpus: int | None = None) -> dict[str, Any]:
    """Train every (configuration, seed) of `plan` not trained yet, then shut Ray down; returns {interrupted,
    errored: the trials that failed with an exception (a configuration error is not one: its trial records it
    and ends, tuner.runs.config_errors)}."""
    import ray
    from ray import tune

    from tuner.search.experiment import start_checked_ray
    from tuner.runs.run_dir import space_from_manifest
    from tuner.search.stop_signals import tune_stop
    from tuner.runs.trials import read_condition
    from tuner.storage.uris import display_uri

    manifest = run.read_manifest()
    space = space_from_manifest(manifest)
    run.check_writable()
    start_checked_ray(space, manifest["store"], address, num_cpus)
    exp_uri = run.child_uri(EXPERIMENT)
    planned = len(plan["configurations"]) * len(plan["seeds"])
    if tune.Tuner.can_restore(exp_uri):
        print(f"[tuner] confirm: continuing the confirmation in {display_uri(exp_uri)} (finished seeds are kept)")
        tuner = tune.Tuner.restore(exp_uri, trainable=make_confirm_trainable(space, run, manifest["store"], plan),
                                   resume_unfinished=True, resume_errored=True)
    else:
        print(f"[tuner] confirm: {len(plan['configurations'])} configurations x {len(plan['seeds'])} seeds "
              f"= {planned} trainings")
        tuner = make_confirm_tuner(space, run, manifest["store"], plan)
    with tune_stop() as stop:   # Ctrl+C or SIGTERM: Tune stops, its state saved
        tuner.fit()
    if ray.is_initialized():
        ray.shutdown()
    records = read_condition(run, EXPERIMENT, "val_ccc_mean", "max")
    return {"interrupted": any(r.status in ("RUNNING", "PENDING") for r in records)
            or (stop.is_set() and len(records) < planned),
            "errored": [r.trial_id for r in records if r.status == "ERROR" and r.config_error is None]}
