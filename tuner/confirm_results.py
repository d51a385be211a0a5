"""The results of a confirmation: RUN/confirm/confirm.json and the table RUN/confirm/confirm.md.

`collect(run, plan)` reads every seed's evaluation from its trial's final checkpoint (no Ray),
summarises each configuration over its seeds and compares configurations with paired tests
(tuner.significance). `read_confirm(run)` returns confirm.json (None before a confirmation).

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
                test: {split: {ccc_<attr>, ccc_mean, utterances}}, error: text (status failed)}],
       summary: {seeds_done: int, seeds_failed: int (status "failed": no model; or "error": the
                 training failed, `confirm NAME` again retries it),
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
fewer than 2. `method` (tuner.significance.method_test: over seeds and test speakers) is the test
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
import itertools
import json
import zipfile
from typing import Any

import numpy as np

from model.checkpoint import best_model_name
from model.errors import UserError
from model.json_shape import Map, shape_problem
from tuner.confirm import (EVALUATION_FILE, EXPERIMENT, SEARCH_SHAPE, evaluated_checkpoint, read_plan,
                           utterance_speakers)
from tuner.run_dir import RunDir
from tuner.significance import (ALPHA, BOOTSTRAP, CONFIDENCE, HOLM, METHOD, PAIRED_T, RESAMPLES, holm,
                                method_test, paired_bootstrap, paired_t_test, t_interval)
from tuner.trial_records import read_condition
from tuner.uris import display_uri

CONFIRM_FILE = "confirm.json"
TABLE_FILE = "confirm.md"
VERSION = 2
BOOTSTRAP_SEED = 0
TESTS = ("method", "paired_t", "bootstrap")   # the comparisons' tests; only "method" is starred
UNFINISHED = ("failed", "error")             # a seed's states that count as failed
SELECTION = ("the best configuration of a condition is the one with the highest mean validation ccc_mean "
             "over its seeds; the test splits only measure it")


STAT_SHAPE = {"mean?": (float, None), "ci95?": ([float], None)}
TEST_SHAPE = ({"p?": (float, None), "p_holm?": (float, None), "ci95?": ([float], None)}, None)   # null: untested
# confirm.json as its readers (report, export --by confirmed, status) use it (model.json_shape)
CONFIRM_SHAPE = {
    "version": int, "run": str, "state": str, "plan": {"seeds": [int], "search?": SEARCH_SHAPE},
    "validation_split?": (str, None), "test_splits": [str],
    "configurations": [{"id": str, "kind": str, "conditions": [str], "condition_values?": (dict, None),
                        "rank?": (int, None), "trial_id?": (str, None), "attributes": [str], "config": dict,
                        "seeds": [{"seed": int, "status": str}],
                        "summary": {"seeds_done": int, "seeds_failed": int, "validation": Map(STAT_SHAPE),
                                    "test": Map(Map(STAT_SHAPE))}}],
    "best": Map(str),
    "comparisons": [{"a": str, "b": str, "split": str, "metric": str, "seeds": [int], "diff": (float, None),
                     "note": (str, None), "method": TEST_SHAPE, "paired_t": TEST_SHAPE, "bootstrap": TEST_SHAPE}],
    "tests": dict}


RESULT_SHAPE = {"ccc_mean": float}
EVALUATION_SHAPE = {"best_epoch": (int, None), "error?": (str, None), "validation_split": (str, None),
                    "test_splits": [str], "validation": (RESULT_SHAPE, None), "test": Map(RESULT_SHAPE)}


def read_confirm(run: RunDir) -> dict[str, Any] | None:
    """confirm.json of the run (None before a confirmation wrote one); a file of another version is
    refused (UserError): `confirm NAME` again rewrites it from the evaluated seeds, training nothing."""
    if not run.exists(EXPERIMENT, CONFIRM_FILE):
        return None
    confirm = run.read_json(EXPERIMENT, CONFIRM_FILE, what="confirmation results", shape={"version": int})
    where = display_uri(run.child_uri(EXPERIMENT, CONFIRM_FILE))
    if confirm["version"] != VERSION:
        raise UserError(f"{where}: confirm.json version {confirm['version']}; "
                        f"this tuner reads version {VERSION} (its significance test is over seeds and speakers). "
                        f"Run `python -m tuner confirm {run.name}` again to rewrite it from the evaluated seeds "
                        "(nothing is trained again)")
    problem = shape_problem(confirm, CONFIRM_SHAPE)
    if problem:
        raise UserError(f"{where}: damaged confirmation results: {problem}")
    return confirm


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
            evaluation = read_evaluation(run, rec.folder, ckpt) if ckpt else None
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
        "selection": SELECTION, "configurations": configurations, "best": best, "comparisons": comparisons,
    }


def summarise(conf: dict[str, Any], test_splits: list[str]) -> dict[str, Any]:
    """A configuration's summary over its finished seeds (and how many failed)."""
    attributes, seeds = conf["attributes"], conf["seeds"]
    done = [s for s in seeds if s["status"] == "done"]
    return {"seeds_done": len(done), "seeds_failed": sum(s["status"] in UNFINISHED for s in seeds),
            "validation": {m: _stats([s["validation"] for s in done], m) for m in _metrics(attributes)},
            "test": {split: {m: _stats([s["test"].get(split) for s in done], m) for m in _metrics(attributes)}
                     for split in test_splits}}


def read_evaluation(run: RunDir, folder: str, ckpt: str) -> dict[str, Any]:
    """A seed's evaluation.json (tuner.confirm.evaluate_seed); damaged, a UserError naming it."""
    return run.read_json(EXPERIMENT, folder, ckpt, EVALUATION_FILE, what="seed evaluation", shape=EVALUATION_SHAPE)


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
    from tuner.store_sync import ensure_local_store

    return FeatureStore.open(ensure_local_store(uri))


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
    """Paired comparisons on every test split and shared metric, Holm-corrected per family; a pair where
    a configuration has fewer than 2 finished seeds (or they share fewer than 2) is listed untested."""
    out = []
    for kind, a, b, label in _pairs(configurations, best):
        shared = [x for x in a["attributes"] if x in b["attributes"]]
        metrics = [f"ccc_{x}" for x in shared] + (["ccc_mean"] if set(a["attributes"]) == set(b["attributes"]) else [])
        for split in test_splits:
            done_a, done_b = _finished(a, split), _finished(b, split)
            seeds = sorted(set(done_a) & set(done_b))
            tested = min(len(done_a), len(done_b), len(seeds)) >= 2
            for metric in metrics:
                va = [done_a[s]["test"][split][metric] for s in seeds]
                vb = [done_b[s]["test"][split][metric] for s in seeds]
                entry = {"kind": kind, "a": a["id"], "b": b["id"], "condition": label, "split": split,
                         "metric": metric, "seeds": seeds, "seeds_failed": {"a": _failed(a), "b": _failed(b)},
                         "mean_a": float(np.mean(va)) if seeds else None,
                         "mean_b": float(np.mean(vb)) if seeds else None,
                         "diff": float(np.mean(va) - np.mean(vb)) if seeds else None,
                         "note": _note(a, b, done_a, done_b, seeds), **{test: None for test in TESTS}}
                if tested:
                    attrs = shared if metric == "ccc_mean" else [metric.removeprefix("ccc_")]
                    labels, preds_a, preds_b, speakers = _stacked(predictions, a["id"], b["id"], seeds, split, attrs)
                    entry.update(
                        method=method_test(labels, preds_a, preds_b, speakers, resamples, BOOTSTRAP_SEED, CONFIDENCE),
                        paired_t=paired_t_test(va, vb, CONFIDENCE),
                        bootstrap=paired_bootstrap(labels, preds_a, preds_b, resamples, BOOTSTRAP_SEED, CONFIDENCE))
                out.append(entry)
    _correct(out)
    return out


def _finished(conf: dict, split: str) -> dict[int, dict]:
    """seed -> entry of the configuration's seeds evaluated on `split`."""
    return {s["seed"]: s for s in conf["seeds"] if s["status"] == "done" and split in s["test"]}


def _failed(conf: dict) -> list[int]:
    """The configuration's seeds that failed (no model, or the training errored)."""
    return [s["seed"] for s in conf["seeds"] if s["status"] in UNFINISHED]


def _note(a: dict, b: dict, done_a: dict, done_b: dict, seeds: list[int]) -> str | None:
    """What a reader must know about a comparison: failed seeds, and why it has no test."""
    parts = []
    for conf, done in ((a, done_a), (b, done_b)):
        if _failed(conf):
            parts.append(f"{conf['id']}: seed(s) {', '.join(map(str, _failed(conf)))} failed")
        if len(done) < 2:
            parts.append(f"{conf['id']}: {len(done)} finished seed(s), no test")
    if len(done_a) >= 2 and len(done_b) >= 2 and len(seeds) < 2:
        parts.append(f"{len(seeds)} seed(s) finished by both, no test")
    return "; ".join(parts) or None


def _correct(comparisons: list[dict]) -> None:
    """Holm over each family (a split, a metric, a test); only the method-level test gets `significant`."""
    for key in {(c["split"], c["metric"]) for c in comparisons}:
        for test in TESTS:
            family = [c[test] for c in comparisons if (c["split"], c["metric"]) == key and c[test] is not None]
            for result, p in zip(family, holm([r["p"] for r in family])):
                result["p_holm"] = p
                if test == "method":
                    result["significant"] = None if p is None else bool(p < ALPHA)


def _stacked(predictions: dict, a: str, b: str, seeds: list[int], split: str,
             attrs: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """labels [n, A], a's and b's predictions [seeds, n, A] and speaker codes [n] of the split's utterances."""
    def stack(cid: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        parts = [predictions[(cid, s, split)] for s in seeds]
        cols = [[list(p["attributes"]).index(x) for x in attrs] for p in parts]
        preds = np.stack([p["preds"][:, c] for p, c in zip(parts, cols)])
        return parts[0]["index"], parts[0]["labels"][:, cols[0]], preds, parts[0]["speakers"]

    index_a, labels, preds_a, speakers = stack(a)
    index_b, _, preds_b, _ = stack(b)
    if not np.array_equal(index_a, index_b):
        raise RuntimeError(f"{a} and {b} were evaluated on different utterances of {split}")
    return labels, preds_a, preds_b, speakers


# ---- the tables (confirm.md and the report) --------------------------------------------------------

def stat_cell(stat: dict[str, Any] | None) -> str:
    """A mean and its 95% interval as a table cell (confirm.md and the report)."""
    if not stat or stat.get("mean") is None:
        return "-"
    if stat.get("ci95") is None:
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} [{stat['ci95'][0]:.3f}, {stat['ci95'][1]:.3f}]"


def p_cell(test: dict[str, Any] | None) -> str:
    """A test's p and Holm-adjusted p as a table cell, * when significant (the method-level test only)."""
    if test is None or test.get("p") is None:
        return "n/a"
    mark = " *" if test.get("significant") else ""
    return f"{test['p']:.3g} / {test['p_holm']:.3g}{mark}"


def ci_cell(test: dict[str, Any] | None) -> str:
    """A difference's 95% interval as a table cell."""
    return "-" if test is None or test.get("ci95") is None else f"[{test['ci95'][0]:+.3f}, {test['ci95'][1]:+.3f}]"


def seeds_cell(conf: dict[str, Any]) -> str:
    """Finished seeds of planned, and how many failed."""
    summary = conf["summary"]
    failed = f" ({summary['seeds_failed']} failed)" if summary["seeds_failed"] else ""
    return f"{summary['seeds_done']}/{len(conf['seeds'])}{failed}"


COMPARISON_HEADERS = ["A", "B", "split", "metric", "seeds", "A - B", "95% CI (method)", "p (method)",
                      "p (t over seeds)", "95% CI (utterances)", "p (utterances)", "note"]


def comparison_row(c: dict[str, Any]) -> list[str]:
    """One comparison's cells, in COMPARISON_HEADERS' order."""
    return [c["a"], c["b"], c["split"], c["metric"], str(len(c["seeds"])),
            "-" if c["diff"] is None else f"{c['diff']:+.3f}", ci_cell(c["method"]), p_cell(c["method"]),
            p_cell(c["paired_t"]), ci_cell(c["bootstrap"]), p_cell(c["bootstrap"]), c["note"] or ""]


def comparisons_note(confirm: dict[str, Any]) -> str:
    """How to read the comparisons' table."""
    t = confirm["tests"]
    return (f"A - B: the difference of mean test CCC over the seeds both finished (seeds). p is shown as raw / "
            f"{t['correction']}; * = significant at {confirm['alpha']} after the correction, given to the "
            f"method-level test only: {t['method']} ({t['resamples']} resamples, seed {t['bootstrap_seed']}). "
            f"p (t over seeds): {t['paired_t']}, which leaves out the test speakers' variation. p (utterances): "
            f"{t['bootstrap']}: a statement about these trained models, not about the method. n/a: no test "
            "(see the note).")


def format_table(confirm: dict[str, Any]) -> str:
    """Markdown: per configuration and metric the mean test CCC and its 95% interval; the comparisons."""
    seeds = confirm["plan"]["seeds"]
    lines = [f"# Confirmation of run {confirm['run']}", "",
             f"{len(seeds)} seeds per configuration ({', '.join(map(str, seeds))}), full epochs, no early "
             f"stopping; mean over the finished seeds with its {confirm['confidence']:.0%} Student-t interval "
             f"[low, high] (none below 2 finished seeds). State: {confirm['state']}.", ""]
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
            lines.append(f"| {name} | {seeds_cell(c)} | {stat_cell(c['summary']['validation'].get('ccc_mean'))} | "
                         + " | ".join(stat_cell(test.get(m)) for m in metrics) + " |")
        lines.append("")
    if confirm["comparisons"]:
        lines += ["## Paired comparisons (same seeds)", "", comparisons_note(confirm), "",
                  "| " + " | ".join(COMPARISON_HEADERS) + " |", "|---" * len(COMPARISON_HEADERS) + "|"]
        lines += ["| " + " | ".join(comparison_row(c)) + " |" for c in confirm["comparisons"]]
        lines.append("")
    lines.append(f"Selection: {confirm['selection']}.")
    if confirm["plan"].get("search"):
        lines += ["", f"Search: {search_cell(confirm['plan']['search'])}."]
    return "\n".join(lines) + "\n"


def search_cell(search: list[dict[str, Any]]) -> str:
    """What the confirmed configurations were picked from: per condition its finished trials of those planned,
    and whether its study had finished (a confirmation with --partial)."""
    return "; ".join(f"{c['condition']} {c['finished']} of {c['planned']} trials finished"
                     + ("" if c["state"] == "done" else f" (study {c['state']}: stopped before it finished)")
                     for c in search)


def write_results(run: RunDir, confirm: dict[str, Any]) -> str:
    """Write confirm.json and confirm.md (atomic); returns the table."""
    table = format_table(confirm)
    run.write_text(json.dumps(confirm, indent=1), EXPERIMENT, CONFIRM_FILE)
    run.write_text(table, EXPERIMENT, TABLE_FILE)
    return table
