"""Export the best configs of a run as YAML files that `python -m tuner train --config` accepts.

Each file is one TrainConfig (the trial's sampled values, the space's fixed values, the condition
and the epochs) plus a `metadata` mapping (ignored by TrainConfig.load) with the run, condition,
rank, trial id, metrics, checkpoint and the exact command to retrain it. FILE holds the overall
best config; with several conditions or --top > 1, every (condition, rank) also gets its own file
next to it, `<stem>.<condition>.rank<k>.yaml`, listed in FILE's metadata.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from model.atomic_files import atomic_write
from model.config import TrainConfig
from model.errors import UserError
from tuner.experiment import space_from_manifest
from tuner.run_dir import RunDir
from tuner.trainable import trial_threads
from tuner.uris import join_uri
from tuner.trial_records import TrialRecord, checkpoint_for, pareto_front, ranked, read_trials

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


def document(run: RunDir, manifest: dict[str, Any], pick: Pick, target: Path) -> dict[str, Any]:
    """The YAML mapping written for one pick: config keys + `metadata`."""
    rec = pick.record
    best = rec.best or {}
    reported = {k: v for k, v in best.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                and (k.startswith(("val_", "loss_", "ssl_", "cluster_")) or k in ("nmi", "epoch"))}
    ckpt = checkpoint_for(rec)
    ckpt_uri = run.child_uri(pick.condition, rec.folder, ckpt) if ckpt else None
    retrain_out = f"runs/{run.name}-{pick.condition.translate(SAFE_LABEL)}-rank{pick.rank}"
    # the trial's thread count too: k-means and the conv kernels reduce in a thread-dependent order
    threads = trial_threads(space_from_manifest(manifest).resources.cpu)
    retrain = "python -m tuner train --config {} --store {} --out {} --set num_threads={}".format(
        shlex.quote(str(target)), shlex.quote(manifest["store"]), shlex.quote(retrain_out), threads)
    metadata = {
        "run": run.name, "run_path": run.uri, "space": manifest["space_file"], "store": manifest["store"],
        "condition": pick.condition_values, "rank": pick.rank, "trial_id": rec.trial_id,
        "trial_status": rec.status, "epochs_trained": rec.epochs,
        "objective": {m: mode for m, mode in zip(manifest["metrics"], manifest["modes"])},
        "best_epoch": int(best.get("training_iteration", 0)) or None, "metrics": reported,
        "checkpoint": ckpt_uri,
        "best_model": join_uri(ckpt_uri, "best_model.pt") if ckpt_uri else None,
        "retrain": retrain,
    }
    return {**config_values(rec), "metadata": metadata}


def target_paths(out: Path, picks: list[Pick]) -> list[Path]:
    """FILE for the first (overall best) pick and one sibling per pick when there are several."""
    if len(picks) == 1:
        return [out]
    stem, suffix = out.stem, out.suffix or ".yaml"
    return [out] + [out.with_name(f"{stem}.{p.condition.translate(SAFE_LABEL)}.rank{p.rank}{suffix}")
                    for p in picks]


def export_best(run: RunDir, out: Path, top: int = 1, force: bool = False) -> list[Path]:
    """Write the best configs; refuses to overwrite existing files unless `force`. Returns the paths."""
    manifest = run.read_manifest()
    picks = best_trials(run, manifest, top)
    if not picks:
        raise UserError(f"{run}: no trial has reported a result yet; nothing to export")
    metric, mode = manifest["metrics"][0], manifest["modes"][0]
    overall = sorted(picks, key=lambda p: p.record.best_value(metric), reverse=(mode == "max"))[0]
    paths = target_paths(out, picks)
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise UserError(f"{', '.join(existing)}: exists already; pass --force to overwrite or choose --out")
    docs = []
    if len(picks) == 1:
        docs = [(paths[0], document(run, manifest, picks[0], paths[0]))]
    else:
        siblings = list(zip(paths[1:], picks))
        for path, pick in siblings:
            docs.append((path, document(run, manifest, pick, path)))
        head = document(run, manifest, overall, paths[0])
        head["metadata"]["note"] = (f"overall best by {metric} ({mode}) across conditions; every "
                                    "condition's best configs are in the files listed under `files`")
        head["metadata"]["files"] = [{"condition": p.condition, "rank": p.rank, "file": str(path),
                                      "trial_id": p.record.trial_id,
                                      metric: p.record.best_value(metric)} for path, p in siblings]
        docs.insert(0, (paths[0], head))
    for path, data in docs:
        atomic_write(path, yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    return [p for p, _ in docs]
