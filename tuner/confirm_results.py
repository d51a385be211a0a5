"""The results of a confirmation: RUN/confirm/confirm.json and the table RUN/confirm/confirm.md.

`collect(run, plan)` reads every seed's evaluation from its trial's final checkpoint (no Ray),
summarises each configuration over its seeds and compares configurations with paired tests
(tuner.significance). `read_confirm(run)` returns confirm.json (None before a confirmation).

confirm.json (version 1; every CCC on the 1..7 label scale, as model.metrics.ccc computes it):

    version: 1
    run, run_path, store: the search run and its feature store
    updated: ISO time of this file; state: "complete" (every seed evaluated) or "partial"
    plan: {top, seeds: [int], splits: [test split] or null (= the store's test splits),
           baselines: [file], command}
    validation_split: e.g. "Validation";  test_splits: e.g. ["Test1"]
    confidence: 0.95;  alpha: 0.05
    tests: {paired_t: "<name of the test>", bootstrap: "<name>", correction: "<name and family>",
            resamples: int, bootstrap_seed: int}
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
                test: {split: {ccc_<attr>, ccc_mean, utterances}}, error: text (status failed)}],
       summary: {seeds_done: int,
                 validation: {metric: STAT}, test: {split: {metric: STAT}}}}]
         STAT = {mean, sd, n, ci95: [low, high] | null}  (Student-t interval of the mean over seeds;
                metric = ccc_<attr> for each trained attribute, and ccc_mean)
    best: {condition label: configuration id}
    comparisons: [
      {kind: "baseline" (a condition's best against a baseline trained in that condition) |
             "condition" (the best of one condition against the best of another),
       a: configuration id, b: configuration id, condition: label (kind baseline) | null,
       split, metric: ccc_<attr> | ccc_mean (attributes both trained; ccc_mean when they train the same),
       seeds: [seeds both finished], mean_a, mean_b,
       paired_t: {test, n, diff (a - b), ci95, t, df, p, p_holm, significant},
       bootstrap: {test, diff, ci95, p, p_holm, significant, resamples, seed, utterances}}]

`significant` is p_holm < alpha; p (and so p_holm, significant) is null where a test is undefined
(fewer than two paired seeds, or differences that never vary). The Holm correction runs over the
comparisons that share a split, a metric and a test.
"""
from __future__ import annotations

import datetime
import io
import itertools
import json
from typing import Any

import numpy as np

from model.checkpoint import best_model_name
from tuner.confirm import EVALUATION_FILE, EXPERIMENT, evaluated_checkpoint, read_plan
from tuner.run_dir import RunDir
from tuner.significance import (ALPHA, BOOTSTRAP, CONFIDENCE, HOLM, PAIRED_T, RESAMPLES, holm,
                                paired_bootstrap, paired_t_test, t_interval)
from tuner.trial_records import read_condition

CONFIRM_FILE = "confirm.json"
TABLE_FILE = "confirm.md"
VERSION = 1
BOOTSTRAP_SEED = 0
SELECTION = ("the best configuration of a condition is the one with the highest mean validation ccc_mean "
             "over its seeds; the test splits only measure it")


def read_confirm(run: RunDir) -> dict[str, Any] | None:
    """confirm.json of the run (None before a confirmation wrote one)."""
    if not run.exists(EXPERIMENT, CONFIRM_FILE):
        return None
    return run.read_json(EXPERIMENT, CONFIRM_FILE, what="confirmation results",
                         keys=("version", "run", "state", "plan", "test_splits", "configurations", "best",
                               "comparisons", "tests"))


def _seed_records(run: RunDir) -> dict[tuple[str, int], Any]:
    """(configuration id, seed) -> its trial record."""
    return {(r.config.get("config_id"), int(r.config.get("seed", -1))): r
            for r in read_condition(run, EXPERIMENT, "val_ccc_mean", "max")}


def _evaluated_checkpoint(run: RunDir, rec) -> str | None:
    """The trial's checkpoint that holds its evaluation (None: not evaluated yet)."""
    return None if rec is None or not rec.folder else evaluated_checkpoint(run, rec.folder)


def progress(run: RunDir) -> dict[str, Any] | None:
    """Seeds by state, overall and per configuration (None before `confirm` ran)."""
    plan = read_plan(run)
    if plan is None:
        return None
    records = _seed_records(run)
    rows, totals = [], {"done": 0, "running": 0, "pending": 0, "error": 0}
    for c in plan["configurations"]:
        counts = {k: 0 for k in totals}
        for seed in plan["seeds"]:
            rec = records.get((c["id"], seed))
            state = _state(rec, _evaluated_checkpoint(run, rec) is not None)
            counts["done" if state == "failed" else state] += 1
        rows.append({"id": c["id"], "planned": len(plan["seeds"]), **counts})
        for k in totals:
            totals[k] += counts[k]
    return {"planned": len(plan["configurations"]) * len(plan["seeds"]), **totals,
            "confirm_json": run.exists(EXPERIMENT, CONFIRM_FILE), "configurations": rows}


def _state(rec, evaluated: bool) -> str:
    """A seed's state; evaluated = its final checkpoint holds the evaluation (whatever Ray's state file
    says: a driver killed right after the last report may not have recorded the trial as finished)."""
    if evaluated:
        return "done"
    if rec is None or rec.status == "PENDING":
        return "pending"
    return "error" if rec.status == "ERROR" else "running"


def _stats(values: list[dict], key: str) -> dict[str, Any]:
    return t_interval([v[key] for v in values if v is not None and v.get(key) is not None], CONFIDENCE)


def _metrics(attributes: list[str]) -> list[str]:
    return [f"ccc_{a}" for a in attributes] + ["ccc_mean"]


def collect(run: RunDir, plan: dict[str, Any], resamples: int = RESAMPLES) -> dict[str, Any]:
    """confirm.json's content from the trials' evaluations (see the module docstring)."""
    manifest = run.read_manifest()
    records = _seed_records(run)
    predictions: dict[tuple[str, int, str], dict[str, np.ndarray]] = {}
    configurations, val_split, test_splits = [], None, []
    for c in plan["configurations"]:
        seeds = []
        for seed in plan["seeds"]:
            rec = records.get((c["id"], seed))
            ckpt = _evaluated_checkpoint(run, rec)
            evaluation = json.loads(run.read_text(EXPERIMENT, rec.folder, ckpt, EVALUATION_FILE)) if ckpt else None
            entry = {"seed": seed, "status": _state(rec, evaluation is not None),
                     "trial_id": rec.trial_id if rec else None, "best_epoch": None, "best_model": None,
                     "validation": None, "test": {}}
            if evaluation is not None:
                entry["best_epoch"] = evaluation["best_epoch"]
                if evaluation.get("error"):
                    entry.update(status="failed", error=evaluation["error"])
                else:
                    entry["best_model"] = run.child_uri(EXPERIMENT, rec.folder, ckpt, best_model_name(c["config"]))
                    entry["validation"], entry["test"] = evaluation["validation"], evaluation["test"]
                    val_split = val_split or evaluation["validation_split"]
                    test_splits += [s for s in evaluation["test_splits"] if s not in test_splits]
                    for split in evaluation["test"]:
                        data = run.read_bytes(EXPERIMENT, rec.folder, ckpt, f"predictions-{split}.npz")
                        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                            predictions[(c["id"], seed, split)] = {k: npz[k] for k in npz.files}
            seeds.append(entry)
        configurations.append({**c, "attributes": list(c["config"]["attributes"]), "epochs": c["config"]["epochs"],
                               "seeds": seeds})
    for conf in configurations:   # after every evaluation was read: test_splits is complete
        attributes, seeds = conf["attributes"], conf["seeds"]
        done = [s for s in seeds if s["status"] == "done"]
        conf["summary"] = {
            "seeds_done": len(done),
            "validation": {m: _stats([s["validation"] for s in done], m) for m in _metrics(attributes)},
            "test": {split: {m: _stats([s["test"].get(split) for s in done], m) for m in _metrics(attributes)}
                     for split in test_splits}}
    best = best_per_condition(configurations, [cond["label"] for cond in manifest["conditions"]])
    comparisons = compare(configurations, best, test_splits, predictions, resamples)
    complete = all(s["status"] in ("done", "failed") for c in configurations for s in c["seeds"])
    return {
        "version": VERSION, "run": run.name, "run_path": run.uri, "store": manifest["store"],
        "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "state": "complete" if complete else "partial",
        "plan": {k: plan[k] for k in ("top", "seeds", "splits", "baselines", "command")},
        "validation_split": val_split, "test_splits": test_splits, "confidence": CONFIDENCE, "alpha": ALPHA,
        "tests": {"paired_t": PAIRED_T, "bootstrap": BOOTSTRAP,
                  "correction": f"{HOLM} over the comparisons sharing a split, a metric and a test",
                  "resamples": resamples, "bootstrap_seed": BOOTSTRAP_SEED},
        "selection": SELECTION, "configurations": configurations, "best": best, "comparisons": comparisons,
    }


def best_per_condition(configurations: list[dict], conditions: list[str]) -> dict[str, str]:
    """condition -> id of its search configuration with the highest mean validation ccc_mean."""
    best = {}
    for label in conditions:
        scored = [(c["summary"]["validation"]["ccc_mean"]["mean"], c["id"]) for c in configurations
                  if c["kind"] == "search" and label in c["conditions"]
                  and c["summary"]["validation"]["ccc_mean"]["mean"] is not None]
        if scored:
            best[label] = max(scored, key=lambda s: s[0])[1]
    return best


def _pairs(configurations: list[dict], best: dict[str, str]) -> list[tuple[str, dict, dict, str | None]]:
    """(kind, a, b, condition): each condition's best against its baselines, then best against best."""
    by_id = {c["id"]: c for c in configurations}
    pairs = []
    for label, cid in best.items():
        for c in configurations:
            if c["kind"] == "baseline" and label in c["conditions"]:
                pairs.append(("baseline", by_id[cid], c, label))
    for (_, a), (_, b) in itertools.combinations(best.items(), 2):
        pairs.append(("condition", by_id[a], by_id[b], None))
    return pairs


def compare(configurations: list[dict], best: dict[str, str], test_splits: list[str],
            predictions: dict, resamples: int) -> list[dict[str, Any]]:
    """Paired comparisons on every test split and shared metric, Holm-corrected per family."""
    out = []
    for kind, a, b, label in _pairs(configurations, best):
        shared = [x for x in a["attributes"] if x in b["attributes"]]
        metrics = [f"ccc_{x}" for x in shared] + (["ccc_mean"] if set(a["attributes"]) == set(b["attributes"]) else [])
        for split in test_splits:
            done_a = {s["seed"]: s for s in a["seeds"] if s["status"] == "done" and split in s["test"]}
            done_b = {s["seed"]: s for s in b["seeds"] if s["status"] == "done" and split in s["test"]}
            seeds = sorted(set(done_a) & set(done_b))
            if not seeds:
                continue
            for metric in metrics:
                va = [done_a[s]["test"][split][metric] for s in seeds]
                vb = [done_b[s]["test"][split][metric] for s in seeds]
                attrs = shared if metric == "ccc_mean" else [metric.removeprefix("ccc_")]
                out.append({"kind": kind, "a": a["id"], "b": b["id"], "condition": label, "split": split,
                            "metric": metric, "seeds": seeds, "mean_a": float(np.mean(va)),
                            "mean_b": float(np.mean(vb)), "paired_t": paired_t_test(va, vb, CONFIDENCE),
                            "bootstrap": _bootstrap(predictions, a["id"], b["id"], seeds, split, attrs, resamples)})
    for key in {(c["split"], c["metric"]) for c in out}:
        family = [c for c in out if (c["split"], c["metric"]) == key]
        for test in ("paired_t", "bootstrap"):
            for c, p in zip(family, holm([c[test]["p"] for c in family])):
                c[test]["p_holm"] = p
                c[test]["significant"] = None if p is None else bool(p < ALPHA)
    return out


def _bootstrap(predictions: dict, a: str, b: str, seeds: list[int], split: str, attrs: list[str],
               resamples: int) -> dict[str, Any]:
    """Paired bootstrap of a against b over the split's utterances, on the given attributes."""
    def stack(cid: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        parts = [predictions[(cid, s, split)] for s in seeds]
        cols = [[list(p["attributes"]).index(x) for x in attrs] for p in parts]
        preds = np.stack([p["preds"][:, c] for p, c in zip(parts, cols)])
        return parts[0]["index"], parts[0]["labels"][:, cols[0]], preds

    index_a, labels, preds_a = stack(a)
    index_b, _, preds_b = stack(b)
    if not np.array_equal(index_a, index_b):
        raise RuntimeError(f"{a} and {b} were evaluated on different utterances of {split}")
    return paired_bootstrap(labels, preds_a, preds_b, resamples=resamples, seed=BOOTSTRAP_SEED,
                            confidence=CONFIDENCE)


# ---- the table -----------------------------------------------------------------------------------

def stat_cell(stat: dict[str, Any] | None) -> str:
    """A mean and its 95% interval as a table cell (confirm.md and the report)."""
    if not stat or stat.get("mean") is None:
        return "-"
    if stat.get("ci95") is None:
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} [{stat['ci95'][0]:.3f}, {stat['ci95'][1]:.3f}]"


def p_cell(test: dict[str, Any]) -> str:
    """A test's p and Holm-adjusted p as a table cell, * when significant."""
    if test.get("p") is None:
        return "n/a"
    mark = " *" if test.get("significant") else ""
    return f"{test['p']:.3g} / {test['p_holm']:.3g}{mark}"


def ci_cell(test: dict[str, Any]) -> str:
    """A difference's 95% interval as a table cell."""
    return "-" if test.get("ci95") is None else f"[{test['ci95'][0]:+.3f}, {test['ci95'][1]:+.3f}]"


def format_table(confirm: dict[str, Any]) -> str:
    """Markdown: per configuration and metric the mean test CCC and its 95% interval; the comparisons."""
    seeds = confirm["plan"]["seeds"]
    lines = [f"# Confirmation of run {confirm['run']}", "",
             f"{len(seeds)} seeds per configuration ({', '.join(map(str, seeds))}), full epochs, no early "
             f"stopping; mean over seeds with its {confirm['confidence']:.0%} Student-t interval "
             f"[low, high]. State: {confirm['state']}.", ""]
    attrs = list(dict.fromkeys(a for c in confirm["configurations"] for a in c["attributes"]))
    metrics = [f"ccc_{a}" for a in attrs] + ["ccc_mean"]
    best_ids = set(confirm["best"].values())
    for split in confirm["test_splits"]:
        lines += [f"## Test CCC on {split}", "",
                  "| configuration | seeds | validation ccc_mean | " + " | ".join(metrics) + " |",
                  "|---" * (len(metrics) + 3) + "|"]
        for c in confirm["configurations"]:
            name = c["id"] + (" (best)" if c["id"] in best_ids else "")
            test = c["summary"]["test"].get(split, {})
            lines.append(f"| {name} | {c['summary']['seeds_done']}/{len(c['seeds'])} | "
                         f"{stat_cell(c['summary']['validation'].get('ccc_mean'))} | "
                         + " | ".join(stat_cell(test.get(m)) for m in metrics) + " |")
        lines.append("")
    if confirm["comparisons"]:
        lines += ["## Paired comparisons (same seeds)", "",
                  f"A - B: the difference of mean test CCC. Tests: {confirm['tests']['paired_t']}; "
                  f"{confirm['tests']['bootstrap']} ({confirm['tests']['resamples']} resamples, seed "
                  f"{confirm['tests']['bootstrap_seed']}). p is shown as raw / {confirm['tests']['correction']}; "
                  f"* = significant at {confirm['alpha']} after the correction.", "",
                  "| A | B | split | metric | A - B | 95% CI (t) | p (t) | 95% CI (bootstrap) | p (bootstrap) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for c in confirm["comparisons"]:
            lines.append(f"| {c['a']} | {c['b']} | {c['split']} | {c['metric']} | {c['paired_t']['diff']:+.3f} | "
                         f"{ci_cell(c['paired_t'])} | {p_cell(c['paired_t'])} | {ci_cell(c['bootstrap'])} | "
                         f"{p_cell(c['bootstrap'])} |")
        lines.append("")
    lines.append(f"Selection: {confirm['selection']}.")
    return "\n".join(lines) + "\n"


def write_results(run: RunDir, confirm: dict[str, Any]) -> str:
    """Write confirm.json and confirm.md (atomic); returns the table."""
    table = format_table(confirm)
    run.write_text(json.dumps(confirm, indent=1), EXPERIMENT, CONFIRM_FILE)
    run.write_text(table, EXPERIMENT, TABLE_FILE)
    return table
