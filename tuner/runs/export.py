"""Export the best configs of a run as YAML files that `python -m tuner train --config` accepts.

Each file is one TrainConfig (the trial's sampled values, the space's fixed values, the condition
and the epochs) plus a `metadata` mapping (ignored by TrainConfig.load) with the run, condition,
rank, trial id, metrics, checkpoint and the exact command to retrain it. FILE holds the overall
best config; with several conditions or --top > 1, every (condition, rank) also gets its own file
next to it, `<stem>.<condition>.rank<k>.yaml`, listed in FILE's metadata.
"""
from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from model.atomic_files import atomic_write
from model.config import TrainConfig
from model.checkpoint import best_model_name
from model.errors import UserError
from tuner.runs.run_dir import RunDir, space_from_manifest
from tuner.space.schema import trial_threads
from tuner.storage.uris import join_uri
from tuner.runs.trials import TrialRecord, checkpoint_for, pareto_front, ranked, read_trials, trial_warnings

SAFE_LABEL = str.maketrans({"/": "_", " ": "_", ",": "_"})


@dataclass
class Pick:
    """One exported trial: its condition, rank within the condition and record."""
    condition: str
    condition_values: dict[str, Any]
    rank: int
    record: TrialRecord


def best_trials(run: RunDir, manifest: dict[str, Any], top: int = 1) -> list[Pick]:
    """The `top` best trials of every condition (multi-objective: from the Pareto front)."""
    metrics, modes = manifest["metrics"], manifest["modes"]
    trials = read_trials(run, manifest)
    for warning in trial_warnings(trials):   # a trial whose results cannot be read is not left out silently
        print(f"warning: {warning}", file=sys.stderr)
    picks = []
    for cond in manifest["conditions"]:
        records = trials.get(cond["label"], [])
        order = ranked(records, metrics[0], modes[0])
        if len(metrics) > 1:
            front = {r.trial_id for r in pareto_front(records, metrics, modes)}
            order = [r for r in order if r.trial_id in front] + [r for r in order if r.trial_id not in front]
        for rank, rec in enumerate(order[:top], start=1):
            picks.append(Pick(cond["label"], cond["values"], rank, rec))
    return picks


def config_values(rec: TrialRecord) -> dict[str, Any]:
    """The trial's TrainConfig keys, validated (machine-specific keys left to the defaults)."""
    values = {k: v for k, v in rec.config.items() if k not in ("num_threads", "device")}
    TrainConfig.from_dict(values, source=f"trial {rec.trial_id} config")
    return values


def retrain_command(run: RunDir, manifest: dict[str, Any], target: Path, what: str) -> str:
    """`train` command for an exported file, into runs/<run>-<what>, with the trial's thread count."""
    # the trial's thread count too: k-means and the conv kernels reduce in a thread-dependent order
    threads = trial_threads(space_from_manifest(manifest).resources.cpu)
    return "python -m tuner train --config {} --store {} --out {} --set num_threads={}".format(
        shlex.quote(str(target)), shlex.quote(manifest["store"]), shlex.quote(f"runs/{run.name}-{what}"), threads)


def document(run: RunDir, manifest: dict[str, Any], pick: Pick, target: Path) -> dict[str, Any]:
    """The YAML mapping written for one pick: config keys + `metadata`."""
    rec = pick.record
    best = rec.best or {}
    reported = {k: v for k, v in best.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                and (k.startswith(("val_", "loss_", "ssl_", "cluster_")) or k in ("nmi", "epoch"))}
    ckpt = checkpoint_for(rec)
    ckpt_uri = run.child_uri(pick.condition, rec.folder, ckpt) if ckpt else None
    retrain = retrain_command(run, manifest, target, f"{pick.condition.translate(SAFE_LABEL)}-rank{pick.rank}")
    metadata = {
        "run": run.name, "run_path": run.uri, "space": manifest["space_file"], "store": manifest["store"],
        "condition": pick.condition_values, "rank": pick.rank, "trial_id": rec.trial_id,
        "trial_status": rec.status, "epochs_trained": rec.epochs,
        "objective": {m: mode for m, mode in zip(manifest["metrics"], manifest["modes"])},
        "best_epoch": int(best.get("training_iteration", 0)) or None, "metrics": reported,
        "checkpoint": ckpt_uri,
        "best_model": join_uri(ckpt_uri, best_model_name(rec.config))
        if ckpt_uri else None,   # a cv_folds trial's is the folder of its fold models
        "retrain": retrain,
    }
    return {**config_values(rec), "metadata": metadata}


def target_paths(out: Path, picks: list) -> list[Path]:
    """FILE for the first (overall best) pick and one sibling per pick when there are several."""
    if len(picks) == 1:
        return [out]
    stem, suffix = out.stem, out.suffix or ".yaml"
    return [out] + [out.with_name(f"{stem}.{p.condition.translate(SAFE_LABEL)}.rank{p.rank}{suffix}")
                    for p in picks]


def write_exports(out: Path, picks: list, make_doc: Callable[[Any, Path], dict[str, Any]], overall: Any,
                  note: str, file_entry: Callable[[Any, Path], dict[str, Any]], force: bool,
                  comment: Sequence[str] = ()) -> list[Path]:
    """Write one file per pick (and FILE for `overall` listing them, when there are several); each file
    starts with the `comment` lines (as YAML comments)."""
    paths = target_paths(out, picks)
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise UserError(f"{', '.join(existing)}: exists already; pass --force to overwrite or choose --out")
    if len(picks) == 1:
        docs = [(paths[0], make_doc(picks[0], paths[0]))]
    else:
        siblings = list(zip(paths[1:], picks))
        docs = [(path, make_doc(pick, path)) for path, pick in siblings]
        head = make_doc(overall, paths[0])
        head["metadata"]["note"] = note
        head["metadata"]["files"] = [file_entry(pick, path) for path, pick in siblings]
        docs.insert(0, (paths[0], head))
    head = "".join(f"# {line}\n" for line in comment)
    for path, data in docs:
        atomic_write(path, head + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    return [p for p, _ in docs]


def export_best(run: RunDir, out: Path, top: int = 1, force: bool = False) -> list[Path]:
    """Write the best configs (and, for a search with one condition per attribute, the attribute -> model
    file); refuses to overwrite existing files unless `force`. Returns the paths."""
    manifest = run.read_manifest()
    picks = best_trials(run, manifest, top)
    if not picks:
        raise UserError(f"{run}: no trial has reported a result yet; nothing to export")
    models = attribute_models(run, manifest, picks)
    models_file = attribute_file(out)
    if models and models_file.exists() and not force:
        raise UserError(f"{models_file}: exists already; pass --force to overwrite or choose --out")
    metric, mode = manifest["metrics"][0], manifest["modes"][0]
    overall = sorted(picks, key=lambda p: p.record.best_value(metric), reverse=(mode == "max"))[0]
    paths = write_exports(
        out, picks, lambda pick, path: document(run, manifest, pick, path), overall,
        f"overall best by {metric} ({mode}) across conditions; every condition's best configs are in the "
        "files listed under `files`",
        lambda p, path: {"condition": p.condition, "rank": p.rank, "file": str(path), "trial_id": p.record.trial_id,
                         metric: p.record.best_value(metric)}, force)
    if not models:
        return paths
    atomic_write(models_file, f"# each attribute's best model in run {run.name} (by {metric}, {mode}): "
                 f"python -m tuner predict --attribute-from {models_file.name} AUDIO... --out preds.csv\n"
                 + yaml.safe_dump(models, sort_keys=False))
    return [*paths, models_file]


def attribute_file(out: Path) -> Path:
    """The attribute -> model file next to export's FILE: `<stem>.attribute_models.yaml`."""
    return out.with_name(f"{out.stem}.attribute_models.yaml")


def condition_attribute(values: dict[str, Any]) -> str | None:
    """The attribute a condition trains alone (`attributes: [act]`, or TrainConfig's string form `act`), else None."""
    attributes = values.get("attributes")
    if isinstance(attributes, str):
        attributes = [a.strip() for a in attributes.split(",")]
    return attributes[0] if isinstance(attributes, list) and len(attributes) == 1 else None


def attribute_models(run: RunDir, manifest: dict[str, Any], picks: list[Pick]) -> dict[str, str] | None:
    """attribute -> best model of its condition's best trial, for a run whose conditions each train one attribute
    (per_attribute, or `conditions: {attributes: [[act], [val]]}`); None for any other run. Local paths for
    a run on this machine; a bucket run's models are URIs, which `predict` cannot read (said here)."""
    attrs = [condition_attribute(c["values"]) for c in manifest["conditions"]]
    if None in attrs or len(set(attrs)) != len(attrs):
        return None
    models = {}
    for pick in (p for p in picks if p.rank == 1):
        ckpt = checkpoint_for(pick.record)
        if ckpt is None:
            print(f"warning: {pick.condition}: its best trial {pick.record.trial_id} kept no checkpoint; "
                  "its attribute is left out of the attribute file", file=sys.stderr)
            continue
        parts = (pick.condition, pick.record.folder, ckpt, best_model_name(pick.record.config))
        models[condition_attribute(pick.condition_values)] = run.path(*parts) if run.local else run.child_uri(*parts)
    if run.local is None and models:
        print(f"warning: {run} is remote: the attribute file names bucket URIs; `predict` reads local model files, "
              "so copy each model to this machine and edit the file's paths first", file=sys.stderr)
    return models


@dataclass
class ConfirmedPick:
    """One confirmed search configuration: its condition, rank by confirmed validation CCC, confirm.json entry."""
    condition: str
    rank: int
    configuration: dict[str, Any]


def validation_mean(configuration: dict[str, Any]) -> float | None:
    """A confirmed configuration's mean validation ccc_mean over its finished seeds (None: no seed finished)."""
    return configuration["summary"]["validation"].get("ccc_mean", {}).get("mean")


def split_mean(configuration: dict[str, Any], split: str) -> float | None:
    """Its mean test ccc_mean over its finished seeds on `split` (shown, never ranked by)."""
    return configuration["summary"]["test"].get(split, {}).get("ccc_mean", {}).get("mean")


def confirmed_picks(confirm: dict[str, Any], top: int) -> list[ConfirmedPick]:
    """The `top` search configurations of every condition by mean validation ccc_mean over seeds: the
    test splits only measure (selecting on them would bias the reported test CCC upwards)."""
    picks = []
    for label in dict.fromkeys(cond for c in confirm["configurations"] for cond in c["conditions"]):
        scored = [c for c in confirm["configurations"] if c["kind"] == "search" and label in c["conditions"]
                  and validation_mean(c) is not None]
        scored.sort(key=validation_mean, reverse=True)
        picks += [ConfirmedPick(label, rank, c) for rank, c in enumerate(scored[:top], start=1)]
    return picks


def confirmed_document(run: RunDir, manifest: dict[str, Any], confirm: dict[str, Any], pick: ConfirmedPick,
                       target: Path) -> dict[str, Any]:
    """The YAML mapping of one confirmed configuration: its config keys + `metadata`."""
    from tuner.runs.confirm_files import UNFINISHED

    c = pick.configuration
    metadata = {
        "run": run.name, "run_path": run.uri, "space": manifest["space_file"], "store": manifest["store"],
        "condition": c["condition_values"],
        "ranked_by": f"mean {confirm.get('validation_split')} ccc_mean over seeds (confirm.json); the test splits "
                     "only measure",
        "confirmed_rank": pick.rank, "configuration": c["id"], "search_rank": c["rank"], "trial_id": c["trial_id"],
        "seeds": [s["seed"] for s in c["seeds"] if s["status"] == "done"],
        "seeds_failed": [s["seed"] for s in c["seeds"] if s["status"] in UNFINISHED],
        "validation_ccc_mean": validation_mean(c),
        "test_ccc_mean": {split: split_mean(c, split) for split in confirm["test_splits"]},
        "confirmed": {"validation": c["summary"]["validation"], **c["summary"]["test"]},
        "retrain": retrain_command(run, manifest, target,
                                   f"{pick.condition.translate(SAFE_LABEL)}-confirmed{pick.rank}"),
    }
    return {**c["config"], "metadata": metadata}


def export_confirmed(run: RunDir, out: Path, top: int = 1, force: bool = False) -> list[Path]:
    """Like export_best, ranked by the confirmation's mean validation CCC over seeds (confirm.json)."""
    from tuner.runs.confirm_files import read_confirm

    manifest = run.read_manifest()
    confirm = read_confirm(run)
    if confirm is None:
        raise UserError(f"{run}: no confirmation yet (confirm/confirm.json missing); run "
                        f"`python -m tuner confirm {run.name}` first")
    picks = confirmed_picks(confirm, top)
    if not picks:
        raise UserError(f"{run}: no search configuration has a confirmed validation CCC yet; nothing to export")
    caveats = partial_caveats(confirm)
    for caveat in caveats:
        print(f"warning: {caveat}", file=sys.stderr)
    return write_exports(
        out, picks, lambda pick, path: confirmed_document(run, manifest, confirm, pick, path),
        max(picks, key=lambda p: validation_mean(p.configuration)),
        "overall best by mean validation ccc_mean over seeds across conditions (test CCC beside it, never used to "
        "rank); every condition's confirmed configs are in the files listed under `files`",
        lambda p, path: {"condition": p.condition, "rank": p.rank, "file": str(path),
                         "configuration": p.configuration["id"],
                         "validation_ccc_mean": validation_mean(p.configuration),
                         "test_ccc_mean": {split: split_mean(p.configuration, split)
                                           for split in confirm["test_splits"]}},
        force, caveats)


def partial_caveats(confirm: dict[str, Any]) -> list[str]:
    """What makes a confirmation partial, one line each: picked from a search stopped before it finished
    (`confirm --partial`), or seeds not all evaluated yet ([] for a complete one)."""
    from tuner.runs.confirm_files import search_cell

    caveats = []
    stopped = [c for c in confirm["plan"].get("search") or [] if c["state"] != "done"]
    if stopped:
        caveats.append(f"partial confirmation: its configurations were picked from a search stopped before it "
                       f"finished (confirm --partial): {search_cell(stopped)}")
    if confirm["state"] != "complete":
        caveats.append(f"partial confirmation: not every seed is evaluated yet (state {confirm['state']}); "
                       f"`python -m tuner confirm {confirm['run']}` continues it")
    return caveats
