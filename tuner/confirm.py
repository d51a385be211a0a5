"""Confirmation of a search: its best configurations (and baselines) retrained with several seeds.

`plan_confirmation` picks the configurations: the top K trials of every condition, each exactly the
config `export` writes (the trial's values; threads = the trial's CPUs, set by the trainable), and
every baseline file (a `train --config` YAML) once per condition, the condition's values filling
the keys the file leaves out (one entry when that gives the same config for every condition). Each
configuration is trained with each seed for its full epochs, with no early stopping, as one Ray Tune
experiment at RUN/confirm/ (a grid over configuration x seed, the run's trial resources, GPU
slices included); the plan is kept in RUN/confirm/plan.json, so `confirm NAME` again continues the
same experiment (Tuner.restore: finished seeds are kept, unfinished ones continue from their last
checkpoint). After its last epoch a seed's trial evaluates its best model (best_model.pt, chosen by
validation CCC) on the validation split and the test splits, inside the trial (on its node, its GPU),
and adds `evaluation.json` and `predictions-<split>.npz` (per test utterance: store row, labels,
predictions, speaker code) to its final checkpoint; tuner.confirm_results
turns those into confirm.json.
"""
from __future__ import annotations

import datetime
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from model.config import TrainConfig
from model.errors import UserError
from model.yaml_files import read_yaml
from tuner.run_dir import RunDir

EXPERIMENT = "confirm"                 # RUN/confirm: the Ray experiment, the plan and the results
PLAN_FILE = "plan.json"
EVALUATION_FILE = "evaluation.json"
PLAN_VERSION = 1
DEFAULT_TOP = 3
DEFAULT_SEEDS = 5
# Machine-specific keys (set by the trial) and the seed (set by the confirmation) are not part of a config.
NOT_CONFIG = ("seed", "num_threads", "device")


def confirm_seeds(n: int) -> list[int]:
    """The seeds of a confirmation: 1..n (the searches' spaces fix seed 0; fresh seeds avoid
    re-measuring the very run that won the search)."""
    return list(range(1, n + 1))


def full_config(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Every TrainConfig key (defaults filled in, validated), without seed, threads and device."""
    config = TrainConfig.from_dict({k: v for k, v in values.items() if k not in NOT_CONFIG}, source=source)
    return {k: v for k, v in config.to_dict().items() if k not in NOT_CONFIG}


def read_baseline(path: Path) -> dict[str, Any]:
    """The config keys a baseline file sets (UserError naming the file when it is not a valid config)."""
    TrainConfig.load(path)  # every problem of the file, with its name
    values = read_yaml(path, what="config file") or {}
    return {k: v for k, v in values.items() if k != "metadata"}


def plan_confirmation(run: RunDir, manifest: dict[str, Any], top: int, seeds: list[int],
                      splits: list[str] | None, baselines: list[Path]) -> dict[str, Any]:
    """The configurations to confirm (the top `top` per condition, then the baselines) and the seeds."""
    from tuner.export import best_trials, config_values

    configurations = []
    for pick in best_trials(run, manifest, top):
        rec = pick.record
        configurations.append({
            "id": f"{pick.condition}/rank{pick.rank}", "kind": "search", "conditions": [pick.condition],
            "condition_values": pick.condition_values, "rank": pick.rank, "trial_id": rec.trial_id,
            "search_value": {m: rec.best_value(m) for m in manifest["metrics"]},
            "baseline": None, "baseline_file": None,
            "config": full_config(config_values(rec), f"trial {rec.trial_id}")})
    if not configurations:
        raise UserError(f"{run}: no trial has reported a result; nothing to confirm")
    names = set()
    for path in baselines:
        name = Path(path).stem
        if name in names:
            raise UserError(f"--baseline {path}: a second baseline named {name!r}; baseline file names must differ")
        names.add(name)
        values = read_baseline(Path(path))
        per_condition = {c["label"]: full_config({**c["values"], **values}, str(path))
                         for c in baseline_conditions(manifest, values, path)}
        distinct = {json.dumps(v, sort_keys=True) for v in per_condition.values()}
        groups = ([(name, list(per_condition))] if len(distinct) == 1
                  else [(f"{name}@{label}", [label]) for label in per_condition])
        for cid, labels in groups:
            configurations.append({
                "id": cid, "kind": "baseline", "conditions": labels, "condition_values": None, "rank": None,
                "trial_id": None, "search_value": None, "baseline": name, "baseline_file": str(path),
                "config": per_condition[labels[0]]})
    return {
        "version": PLAN_VERSION, "run": run.name, "top": top, "seeds": list(seeds), "splits": splits,
        "baselines": [str(p) for p in baselines], "configurations": configurations,
        "search": search_extent(run, manifest),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m tuner", *sys.argv[1:]]) if sys.argv else "",
    }


def baseline_conditions(manifest: dict[str, Any], values: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """The conditions a baseline is trained and compared in: every one, except in a run whose conditions
    each train one attribute (per_attribute), where a baseline that trains one attribute alone belongs to
    that attribute's condition only. (One that trains several is compared with each condition's pick on
    that attribute's CCC; one that leaves attributes out trains each condition's attribute.)"""
    from tuner.export import condition_attribute

    conditions = manifest["conditions"]
    if "attributes" not in values or not all(condition_attribute(c["values"]) for c in conditions):
        return conditions
    own = condition_attribute(full_config(values, str(path)))
    if own is None:
        return conditions
    matching = [c for c in conditions if condition_attribute(c["values"]) == own]
    if not matching:
        raise UserError(f"--baseline {path}: trains {own} alone, which no condition of this run trains "
                        f"({', '.join(c['label'] for c in conditions)}): nothing to compare it with")
    return matching


def search_extent(run: RunDir, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Per condition of the search: its state and how many trials it had, finished and planned (what the
    configurations to confirm were picked from; a stopped search is confirmed only with --partial)."""
    from tuner.run_dir import space_from_manifest
    from tuner.trial_records import read_trials

    trials = read_trials(run, manifest)
    planned = space_from_manifest(manifest).budget.num_samples
    return [{"condition": c["label"], "state": c["state"], "trials": len(trials.get(c["label"], [])),
             "finished": sum(1 for r in trials.get(c["label"], []) if r.status == "TERMINATED"),
             "planned": planned} for c in manifest["conditions"]]


SEARCH_SHAPE = [{"condition": str, "state": str, "trials": int, "finished": int, "planned": int}]
# plan.json as its readers use it (model.json_shape): a damaged file is refused naming the first difference
PLAN_SHAPE = {
    "version": int, "top": int, "seeds": [int], "splits": ([str], None), "baselines": [str],
    "configurations": [{"id": str, "kind": str, "conditions": [str], "config": {"attributes": [str], "epochs": int}}],
    "search?": SEARCH_SHAPE, "command?": str}


def read_plan(run: RunDir) -> dict[str, Any] | None:
    """The plan of the run's confirmation (None before `confirm` ran)."""
    if not run.exists(EXPERIMENT, PLAN_FILE):
        return None
    return run.read_json(EXPERIMENT, PLAN_FILE, what="confirmation plan", shape=PLAN_SHAPE)


def same_plan(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between a stored plan and a new one (top, seeds, splits, configurations)."""
    diffs = [f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in ("top", "seeds", "splits")
             if old.get(key) != new.get(key)]
    key = lambda c: (c["id"], json.dumps(c["config"], sort_keys=True))  # noqa: E731
    if sorted(map(key, old["configurations"])) != sorted(map(key, new["configurations"])):
        diffs.append("the configurations (other baselines, or baseline files changed)")
    return diffs


# ---- in the trial ------------------------------------------------------------------------------

def evaluate_seed(trainer, directory: str, splits: list[str] | None) -> dict[str, float]:
    """After the last epoch: evaluate best_model.pt in the checkpoint `directory` on the validation
    and test splits; write evaluation.json and predictions-<split>.npz there; return summary metrics.
    A cv_folds configuration's best model is its folder of fold models (averaged); its validation
    is the best mean-over-folds CCC (the store's Validation split was part of its folds)."""
    from model.checkpoint import best_model_name
    from model.inference import evaluate_store, resolve_models

    store = trainer.store
    test_splits = list(splits) if splits is not None else list(store.roles["test"])
    evaluation: dict[str, Any] = {"best_epoch": trainer.best_epoch, "validation_split": trainer.val_name,
                                  "test_splits": test_splits, "validation": None, "test": {}}
    best = Path(directory) / best_model_name(trainer.config)
    if not best.exists():  # validation CCC never finite: no model to evaluate
        evaluation["error"] = "no best model: the validation CCC was never a finite number"
    else:
        model = resolve_models(best, trainer.device)
        if trainer.config.cv_folds:
            evaluation["validation"] = {"ccc_mean": trainer.best_metric, "cv_folds": trainer.config.cv_folds}
        else:
            evaluation["validation"] = evaluate_store(model, store, trainer.val_name, trainer.device)
        for split in test_splits:
            result = evaluate_store(model, store, split, trainer.device, predictions=True)
            per_utt = result.pop("predictions")
            buf = io.BytesIO()
            np.savez(buf, index=per_utt["index"], labels=per_utt["labels"], preds=per_utt["preds"],
                     speakers=utterance_speakers(store, per_utt["index"]),
                     attributes=np.array(trainer.config.attributes))
            (Path(directory) / f"predictions-{split}.npz").write_bytes(buf.getvalue())
            evaluation["test"][split] = result
    (Path(directory) / EVALUATION_FILE).write_text(json.dumps(evaluation, indent=1))
    out = {}
    if evaluation["validation"]:
        out["confirm_validation_ccc_mean"] = evaluation["validation"]["ccc_mean"]
    for split, result in evaluation["test"].items():
        out[f"confirm_{split}_ccc_mean"] = result["ccc_mean"]
    return out


def utterance_speakers(store, index: np.ndarray) -> np.ndarray:
    """The speaker codes of store rows `index` (-1: unknown; all -1 when the store has no speaker ids)."""
    return store.groups(index, "speaker") if store.speakers else np.full(len(index), -1, dtype=np.int64)


def evaluated_checkpoint(run: RunDir, folder: str) -> str | None:
    """The checkpoint of trial folder RUN/confirm/`folder` that holds its evaluation (None: not evaluated)."""
    return next((c for c in reversed(run.listdir(EXPERIMENT, folder))
                 if c.startswith("checkpoint_") and run.exists(EXPERIMENT, folder, c, EVALUATION_FILE)), None)


def confirm_trial(config: dict[str, Any], configurations: dict[str, dict[str, Any]], store_path: str,
                  cpus: float, gpus: float, splits: list[str] | None, storage: str, run_name: str,
                  first_keys: tuple[str, ...] = ()) -> None:
    """Ray Tune function trainable: one seed of one configuration, trained fully, then evaluated.

    A seed already evaluated is not trained again: a driver killed after the trial's last checkpoint
    was written but before it recorded that checkpoint restores the trial without it."""
    from functools import partial

    from ray import tune

    from tuner.trainable import train_trial

    folder = Path(tune.get_context().get_trial_dir()).name
    if evaluated_checkpoint(RunDir(storage, run_name), folder) is not None:
        print(f"[tuner] confirm: {config['config_id']} seed {config['seed']} was evaluated before; kept")
        return
    values = {**configurations[config["config_id"]], "seed": int(config["seed"])}
    train_trial(values, store_path, cpus, gpus, first_keys, finish=partial(evaluate_seed, splits=splits))


# ---- the driver --------------------------------------------------------------------------------

def make_confirm_tuner(space, run: RunDir, store: str, plan: dict[str, Any]):
    """A Tuner over the grid configuration x seed: FIFO (no early stopping), the run's resources."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback

    from tuner.experiment import MAX_FAILURES, REUSE_ACTORS, trial_dirname
    from tuner.result_log import ResultJsonLogger
    from tuner.tensorboard_log import TensorBoardCallback

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
    from tuner.experiment import make_trainable

    return make_trainable(space, store, confirm_trial, splits=plan["splits"], storage=run.storage, run_name=run.name,
                          configurations={c["id"]: c["config"] for c in plan["configurations"]})


def run_confirmation(run: RunDir, plan: dict[str, Any], address: str | None,
                     num_cpus: int | None = None) -> dict[str, Any]:
    """Train every (configuration, seed) of `plan` not trained yet; returns {interrupted, errored}."""
    from ray import tune

    from tuner.experiment import _start
    from tuner.run_dir import space_from_manifest
    from tuner.stop_signals import tune_stop
    from tuner.trial_records import read_condition
    from tuner.uris import display_uri

    manifest = run.read_manifest()
    space = space_from_manifest(manifest)
    run.check_writable()
    _start(space, manifest["store"], address, num_cpus)
    exp_uri = run.child_uri(EXPERIMENT)
    if tune.Tuner.can_restore(exp_uri):
        print(f"[tuner] confirm: continuing the confirmation in {display_uri(exp_uri)} (finished seeds are kept)")
        tuner = tune.Tuner.restore(exp_uri, trainable=make_confirm_trainable(space, run, manifest["store"], plan),
                                   resume_unfinished=True, resume_errored=True)
    else:
        n = len(plan["configurations"]) * len(plan["seeds"])
        print(f"[tuner] confirm: {len(plan['configurations'])} configurations x {len(plan['seeds'])} seeds "
              f"= {n} trainings")
        tuner = make_confirm_tuner(space, run, manifest["store"], plan)
    with tune_stop() as stop:   # Ctrl+C or SIGTERM: Tune stops, its state saved
        tuner.fit()
    records = read_condition(run, EXPERIMENT, "val_ccc_mean", "max")
    planned = len(plan["configurations"]) * len(plan["seeds"])
    return {"interrupted": any(r.status in ("RUNNING", "PENDING") for r in records)
            or (stop.is_set() and len(records) < planned),
            "errored": [r.trial_id for r in records if r.status == "ERROR"]}
