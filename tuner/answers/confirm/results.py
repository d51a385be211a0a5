"""The results of a confirmation: RUN/confirm/confirm.json and the table RUN/confirm/confirm.md.

`collect(run, plan)` reads every seed's evaluation from its trial's final checkpoint (no Ray),
summarises each configuration over its seeds and compares configurations with paired tests
(tuner.answers.confirm.compare); `write_results` writes confirm.json and its table (tuner.answers.confirm.table).
tuner.runs.confirm_files.read_confirm(run) reads confirm.json back (None before a confirmation).

confirm.json (version 2; every CCC on the 1..7 label scale, as model.metrics.ccc computes it;
`read_confirm` refuses a file of another version, and `confirm NAME` again rewrites it):

    version: 2
    run, run_path, store: the search run and its feature store
    updated: ISO time of this file; state: "complete" (every seed evaluated) or "partial"
    plan: {top, seeds: [int], splits: [test split] or null (= the store's test splits),
           baselines: [file], command,
           search: [{condition, state ("done" or not: confirmed with --partial), trials, finished, planned}]
           (what the configurations were picked from; absent in confirmations planned before 2026-12)}
    validation_split: e.g. "Validation";  test_splits: e.g. ["Test1"]
    confidence: 0.95;  alpha: 0.05
    tests: {method: "<name of the method-level test>", paired_t: "<name>", bootstrap: "<name>",
            correction: "<name and family>", resamples: int, bootstrap_seed: int}
    selection: how the best configuration of a condition is chosen (highest mean validation
               ccc_mean over its seeds: the test splits are used only to measure)
    configurations: [                       # search picks first (condition, rank), then baselines
      {id: "labeled_ratio=0.1/rank1" | "<baseline>" | "<baseline>@<condition>",
       kind: "search" | "baseline",
       conditions: [condition label]        # the conditions it stands for (a baseline: maybe all)
       condition_values: {key: value} | null, rank: int | null (rank in the search),
       trial_id: search trial id | null, search_value: {metric: best value in the search} | null,
       baseline: name | null, baseline_file: path | null,
       config: {TrainConfig key: value}     # everything but seed, num_threads and device
       attributes: [attr], epochs: int,
       seeds: [{seed, status: "done" | "running" | "pending" | "error" | "failed",
                trial_id, best_epoch, best_model: URI of best_model.pt | null,
                validation: {ccc_<attr>, ccc_mean, utterances} | null,
                test: {split: {ccc_<attr>, ccc_mean, utterances}}, error: text (status failed),
                config_error: true (status failed on a configuration error: the store cannot train this
                configuration, its trial recorded `error` and was not retried; absent otherwise)}],
       summary: {seeds_done: int, seeds_failed: int (status "failed": no model, or a configuration error;
                 or "error": the training failed, `confirm NAME` again retries it),
                 validation: {metric: STAT}, test: {split: {metric: STAT}}}}]
         STAT = {mean, sd, n, ci95: [low, high] | null}  (Student-t interval of the mean over the
                finished seeds, null below 2; metric = ccc_<attr> per trained attribute, and ccc_mean)
    best: {condition label: configuration id}
    comparisons: [
      {kind: "baseline" (a condition's best against a baseline trained in that condition) |
             "condition" (the best of one condition against the best of another),
       a: configuration id, b: configuration id, condition: label (kind baseline) | null,
       split, metric: ccc_<attr> | ccc_mean (attributes both trained; ccc_mean when they train the same),
       seeds: [seeds both finished], seeds_failed: {a: [seed], b: [seed]},
       mean_a, mean_b, diff (a - b, over `seeds`; null without one),
       note: failed seeds and why there is no test | null,
       method: {test, diff, ci95, se, t, df, p, p_holm, significant, seeds, speakers,
                var_seeds, var_speakers, resamples, seed} | null,
       paired_t: {test, n, diff, ci95, t, df, p, p_holm} | null,
       bootstrap: {test, diff, ci95, p, p_holm, resamples, seed, utterances} | null}]

A comparison's tests are null when a configuration has fewer than 2 finished seeds or the two share
fewer than 2. `method` (tuner.answers.confirm.significance.method_test: over seeds and test speakers) is the test
that decides: `significant` is its p_holm < alpha. `paired_t` ignores the test speakers, and
`bootstrap` (over utterances, seeds fixed) is a statement about these trained models, not about the
method: neither is marked significant. p (and so p_holm, significant) is null where a test is
undefined (differences that never vary). The Holm correction runs over the comparisons that share a
split, a metric and a test.
"""
from __future__ import annotations

import datetime
import functools
import io
import json
import zipfile
from typing import Any

import numpy as np

from model.checkpoint import best_model_name
from model.errors import UserError
from tuner.answers.confirm.compare import BEST_CONFIGURATION_RULE, BOOTSTRAP_SEED, best_per_condition, compare
from tuner.answers.confirm.significance import (ALPHA, BOOTSTRAP, CONFIDENCE, HOLM, METHOD, PAIRED_T, RESAMPLES,
                                                t_interval)
from tuner.answers.confirm.table import format_table
from tuner.answers.confirm.trial import utterance_speakers
from tuner.runs.confirm_files import (CONFIRM_FILE, EXPERIMENT, TABLE_FILE, UNFINISHED, VERSION, read_evaluation,
                                     seed_checkpoint, seed_records, seed_state, summary_metrics)
from tuner.runs.run_dir import RunDir


def _stats(values: list[dict], key: str) -> dict[str, Any]:
    return t_interval([v[key] for v in values if v is not None and v.get(key) is not None], CONFIDENCE)


def collect(run: RunDir, plan: dict[str, Any], resamples: int = RESAMPLES) -> dict[str, Any]:
    """confirm.json's content from the trials' evaluations (see the module docstring)."""
    manifest = run.read_manifest()
    records = seed_records(run)
    predictions: dict[tuple[str, int, str], dict[str, np.ndarray]] = {}
    configurations, val_split, test_splits = [], None, []
    for c in plan["configurations"]:
        seeds = []
        for seed in plan["seeds"]:
            rec = records.get((c["id"], seed))
            entry, evaluation, ckpt = seed_entry(run, c, seed, rec)
            if entry["status"] == "done":
                val_split = val_split or evaluation["validation_split"]
                test_splits += [s for s in evaluation["test_splits"] if s not in test_splits]
                for split in evaluation["test"]:
                    predictions[(c["id"], seed, split)] = read_predictions(run, (rec.folder, ckpt), split,
                                                                           manifest["store"])
            seeds.append(entry)
        configurations.append({**c, "attributes": list(c["config"]["attributes"]), "epochs": c["config"]["epochs"],
                               "seeds": seeds})
    for conf in configurations:   # after every evaluation was read: test_splits is complete
        conf["summary"] = summarise(conf, test_splits)
    best = best_per_condition(configurations, [cond["label"] for cond in manifest["conditions"]])
    comparisons = compare(configurations, best, test_splits, predictions, resamples)
    complete = all(s["status"] in ("done", "failed") for c in configurations for s in c["seeds"])
    return {
        "version": VERSION, "run": run.name, "run_path": run.uri, "store": manifest["store"],
        "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "state": "complete" if complete else "partial",
        "plan": {k: plan[k] for k in ("top", "seeds", "splits", "baselines", "command", "search") if k in plan},
        "validation_split": val_split, "test_splits": test_splits, "confidence": CONFIDENCE, "alpha": ALPHA,
        "tests": {"method": METHOD, "paired_t": PAIRED_T, "bootstrap": BOOTSTRAP,
                  "correction": f"{HOLM} over the comparisons sharing a split, a metric and a test",
                  "resamples": resamples, "bootstrap_seed": BOOTSTRAP_SEED},
        "selection": BEST_CONFIGURATION_RULE, "configurations": configurations, "best": best,
        "comparisons": comparisons,
    }


def seed_entry(run: RunDir, conf: dict[str, Any], seed: int, rec) -> tuple[dict[str, Any], dict | None, str | None]:
    """A seed's entry of confirm.json (without its predictions), its evaluation and the checkpoint holding it
    (None, None: not evaluated). A seed whose trial recorded a configuration error is `failed` on it."""
    ckpt = seed_checkpoint(run, rec)
    evaluation = read_evaluation(run, rec.folder, ckpt) if ckpt else None
    entry = {"seed": seed, "status": seed_state(rec, evaluation is not None),
             "trial_id": rec.trial_id if rec else None, "best_epoch": None, "best_model": None,
             "validation": None, "test": {}}
    if evaluation is None:
        if rec is not None and rec.config_error is not None:   # not retried (tuner.runs.config_errors)
            entry.update(status="failed", error=rec.config_error, config_error=True)
        return entry, None, None
    entry["best_epoch"] = evaluation["best_epoch"]
    if evaluation.get("error"):
        entry.update(status="failed", error=evaluation["error"])
    else:
        entry["best_model"] = run.child_uri(EXPERIMENT, rec.folder, ckpt, best_model_name(conf["config"]))
        entry["validation"], entry["test"] = evaluation["validation"], evaluation["test"]
    return entry, evaluation, ckpt


def config_error_lines(run: RunDir, confirm: dict[str, Any]) -> list[str]:
    """One line per distinct configuration error of the confirmation's seeds, naming its configurations and
    seeds, and what to do: confirming again cannot help (the configuration is in the plan, and fails the same)."""
    from tuner.storage.uris import display_uri

    by_message: dict[str, dict[str, list[int]]] = {}
    confs = {c["id"]: c for c in confirm["configurations"]}
    for c in confirm["configurations"]:
        for s in c["seeds"]:
            if s.get("config_error"):
                by_message.setdefault(s["error"], {}).setdefault(c["id"], []).append(s["seed"])
    lines = []
    for message, failed in by_message.items():
        where = "; ".join(f"configuration {cid}: seed(s) {', '.join(map(str, seeds))}" for cid, seeds in failed.items())
        baselines = [confs[cid]["baseline_file"] for cid in failed if confs[cid]["kind"] == "baseline"]
        searched = [cid for cid in failed if confs[cid]["kind"] == "search"]
        fixes = ([f"fix or leave out --baseline {', '.join(dict.fromkeys(baselines))}"] if baselines else []) + (
            [f"confirm without {', '.join(searched)} (a smaller --top) or fix the store"] if searched else [])
        lines.append(f"{message} ({where}: failed on it, not retried; confirming again cannot help: "
                     f"{' and '.join(fixes)}, then move {display_uri(run.child_uri(EXPERIMENT))} away and run "
                     f"`python -m tuner confirm {run.name}` again)")
    return lines


def summarise(conf: dict[str, Any], test_splits: list[str]) -> dict[str, Any]:
    """A configuration's summary over its finished seeds (and how many failed)."""
    attributes, seeds = conf["attributes"], conf["seeds"]
    done = [s for s in seeds if s["status"] == "done"]
    return {"seeds_done": len(done), "seeds_failed": sum(s["status"] in UNFINISHED for s in seeds),
            "validation": {m: _stats([s["validation"] for s in done], m) for m in summary_metrics(attributes)},
            "test": {split: {m: _stats([s["test"].get(split) for s in done], m) for m in summary_metrics(attributes)}
                     for split in test_splits}}


def read_predictions(run: RunDir, where: tuple[str, str], split: str, store: str) -> dict[str, np.ndarray]:
    """A seed's predictions-<split>.npz (trial folder and checkpoint `where`); damaged, a UserError naming it."""
    parts = (EXPERIMENT, *where, f"predictions-{split}.npz")
    try:
        return _predictions(run.read_bytes(*parts), store)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{run.path(*parts)}: damaged seed predictions: {exc.__class__.__name__}: {exc}") from None


def _predictions(data: bytes, store: str) -> dict[str, np.ndarray]:
    """A seed's predictions-<split>.npz; its speaker codes from the store when the seed was evaluated
    before they were saved there (ValueError: entries missing)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        out = {k: npz[k] for k in npz.files}
    missing = [k for k in ("index", "labels", "preds", "attributes") if k not in out]
    if missing:
        raise ValueError(f"{', '.join(missing)} missing")
    if "speakers" not in out:
        out["speakers"] = utterance_speakers(_open_store(store), out["index"])
    return out


@functools.lru_cache(maxsize=4)
def _open_store(uri: str):
    from model.store import FeatureStore
    from tuner.storage.store_sync import ensure_local_store

    return FeatureStore.open(ensure_local_store(uri))


def write_results(run: RunDir, confirm: dict[str, Any]) -> str:
    """Write confirm.json and confirm.md (atomic); returns the table."""
    table = format_table(confirm)
    run.write_text(json.dumps(confirm, indent=1), EXPERIMENT, CONFIRM_FILE)
    run.write_text(table, EXPERIMENT, TABLE_FILE)
    return table
