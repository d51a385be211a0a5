"""The plan of a confirmation (RUN/confirm/plan.json): the configurations to retrain and the seeds.

`plan_confirmation` picks the configurations: the top K trials of every condition, each exactly the
config `export` writes (the trial's values; threads = the trial's CPUs, set by the trainable), and
every baseline file (a `train --config` YAML) once per condition, the condition's values filling
the keys the file leaves out (one entry when that gives the same config for every condition). The plan
is kept (`choose_plan` writes it, tuner.runs.confirm_files.read_plan reads it) so that `confirm NAME` again
continues the same experiment (`same_plan` says what differs).
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from model.config import TrainConfig
from model.errors import UserError
from model.locks import command_line
from model.yaml_files import read_yaml
from tuner.runs.confirm_files import EXPERIMENT, PLAN_FILE, read_plan
from tuner.runs.run_dir import RunDir
from tuner.storage.uris import display_uri, is_uri

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
    from tuner.runs.export import best_trials, config_values

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
        "command": command_line(),
    }


def baseline_conditions(manifest: dict[str, Any], values: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """The conditions a baseline is trained and compared in: every one, except in a run whose conditions
    each train one attribute (per_attribute), where a baseline that trains one attribute alone belongs to
    that attribute's condition only. (One that trains several is compared with each condition's pick on
    that attribute's CCC; one that leaves attributes out trains each condition's attribute.)"""
    from tuner.runs.export import condition_attribute

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
    from tuner.runs.run_dir import space_from_manifest
    from tuner.runs.trials import read_trials

    trials = read_trials(run, manifest)
    planned = space_from_manifest(manifest).budget.num_samples
    return [{"condition": c["label"], "state": c["state"], "trials": len(trials.get(c["label"], [])),
             "finished": sum(1 for r in trials.get(c["label"], []) if r.status == "TERMINATED"),
             "planned": planned} for c in manifest["conditions"]]


def same_plan(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between a stored plan and a new one (top, seeds, splits, configurations)."""
    diffs = [f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in ("top", "seeds", "splits")
             if old.get(key) != new.get(key)]
    key = lambda c: (c["id"], json.dumps(c["config"], sort_keys=True))  # noqa: E731
    if sorted(map(key, old["configurations"])) != sorted(map(key, new["configurations"])):
        diffs.append("the configurations (other baselines, or baseline files changed)")
    return diffs


def check_search_done(run: RunDir, manifest: dict[str, Any], partial: bool) -> None:
    """UserError when a condition of the search has not finished, unless `partial` (confirm --partial)."""
    unfinished = [c["label"] for c in manifest["conditions"] if c["state"] != "done"]
    if unfinished and not partial:
        raise UserError(f"run {run.name}: condition(s) {', '.join(unfinished)} not finished; finish the search "
                        f"with `python -m tuner resume {run.name}` before confirming it, or confirm what it "
                        f"found so far with `python -m tuner confirm {run.name} --partial`")


def checked_test_splits(store: str, asked: list[str] | None) -> list[str] | None:
    """The test splits to evaluate, checked against a local store (a bucket store: the trial decides)."""
    from model.store import FeatureStore

    if is_uri(store):
        return asked
    opened = FeatureStore.open(store)
    splits = asked if asked is not None else list(opened.roles["test"])
    for split in splits:
        if split not in opened.splits:
            raise UserError(f"--split {split}: the store {store} has no such split; it has "
                            f"{', '.join(map(str, opened.splits))}")
    if not splits:
        raise UserError(f"{store}: the store has no test split; name one with --split")
    return splits


def choose_plan(run: RunDir, manifest: dict[str, Any], top: int | None, seeds: int | None,
                splits: list[str] | None, baselines: list[str] | None) -> dict[str, Any]:
    """A new plan, written to RUN/confirm/plan.json, or the stored one when continuing (refused if the options
    given differ from it). None: an option not given (the default, or the stored plan's)."""
    existing = read_plan(run)
    files = [Path(p).resolve() for p in baselines or []]
    if existing is None:
        plan = plan_confirmation(run, manifest, top or DEFAULT_TOP, confirm_seeds(seeds or DEFAULT_SEEDS),
                                 checked_test_splits(manifest["store"], splits), files)
        run.write_text(json.dumps(plan, indent=1), EXPERIMENT, PLAN_FILE)
        return plan
    given = {"top": top, "seeds": confirm_seeds(seeds) if seeds else None, "splits": splits}
    diffs = [f"{k} {existing[k]!r} (given {v!r})" for k, v in given.items() if v is not None and v != existing[k]]
    if baselines is not None:
        again = plan_confirmation(run, manifest, existing["top"], existing["seeds"], existing["splits"], files)
        diffs += same_plan(existing, again)
    if diffs:
        raise UserError(f"{display_uri(run.child_uri(EXPERIMENT))}: this run's confirmation was planned with "
                        f"other options: {'; '.join(diffs)}. Run `python -m tuner confirm {run.name}` without "
                        "them to continue it, or move that folder away to start a new one")
    return existing
