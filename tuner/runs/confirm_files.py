"""The confirmation's files in a run folder, RUN/confirm/: the plan (plan.json, written by
tuner.answers.confirm.plan), each seed's evaluation in its trial's final checkpoint (evaluation.json, written by
tuner.answers.confirm.trial), a seed's configuration error in its trial folder (config_error.txt,
tuner.runs.config_errors), the results (confirm.json, schema in tuner.answers.confirm.results) and their table
(confirm.md), both written by tuner.answers.confirm.results. Reading them needs no Ray: `status` shows the
confirmation's progress, `export --by confirmed` and `report` read confirm.json."""
from __future__ import annotations

from typing import Any

from model.errors import UserError
from model.json_shape import Map, shape_problem
from tuner.runs.run_dir import RunDir
from tuner.runs.trials import read_condition
from tuner.storage.uris import display_uri

EXPERIMENT = "confirm"                 # RUN/confirm: the Ray experiment, the plan and the results
PLAN_FILE = "plan.json"
EVALUATION_FILE = "evaluation.json"
CONFIRM_FILE = "confirm.json"
TABLE_FILE = "confirm.md"
VERSION = 2                            # of confirm.json
UNFINISHED = ("failed", "error")       # a seed's states that count as failed



def summary_metrics(attributes: list[str]) -> list[str]:
    """The metrics confirm.json summarises (and confirm.md and the report show) for configurations that train
    `attributes`: ccc_<attr> per attribute, then ccc_mean."""
    return [f"ccc_{a}" for a in attributes] + ["ccc_mean"]


SEARCH_SHAPE = [{"condition": str, "state": str, "trials": int, "finished": int, "planned": int}]
# plan.json as its readers use it (model.json_shape): a damaged file is refused naming the first difference
PLAN_SHAPE = {
    "version": int, "top": int, "seeds": [int], "splits": ([str], None), "baselines": [str],
    "configurations": [{"id": str, "kind": str, "conditions": [str], "config": {"attributes": [str], "epochs": int}}],
    "search?": SEARCH_SHAPE, "command?": str}
STAT_SHAPE = {"mean?": (float, None), "ci95?": ([float], None)}
TEST_SHAPE = ({"p?": (float, None), "p_holm?": (float, None), "ci95?": ([float], None)}, None)   # null: untested
# confirm.json as its readers (report, export --by confirmed, status) use it (model.json_shape)
CONFIRM_SHAPE = {
    "version": int, "run": str, "state": str, "plan": {"seeds": [int], "search?": SEARCH_SHAPE},
    "validation_split?": (str, None), "test_splits": [str],
    "configurations": [{"id": str, "kind": str, "conditions": [str], "condition_values?": (dict, None),
                        "rank?": (int, None), "trial_id?": (str, None), "attributes": [str], "config": dict,
                        "seeds": [{"seed": int, "status": str, "error?": str, "config_error?": bool}],
                        "summary": {"seeds_done": int, "seeds_failed": int, "validation": Map(STAT_SHAPE),
                                    "test": Map(Map(STAT_SHAPE))}}],
    "best": Map(str),
    "comparisons": [{"a": str, "b": str, "split": str, "metric": str, "seeds": [int], "diff": (float, None),
                     "note": (str, None), "method": TEST_SHAPE, "paired_t": TEST_SHAPE, "bootstrap": TEST_SHAPE}],
    "tests": dict}
RESULT_SHAPE = {"ccc_mean": float}
EVALUATION_SHAPE = {"best_epoch": (int, None), "error?": (str, None), "validation_split": (str, None),
                    "test_splits": [str], "validation": (RESULT_SHAPE, None), "test": Map(RESULT_SHAPE)}


def read_plan(run: RunDir) -> dict[str, Any] | None:
    """The plan of the run's confirmation (None before `confirm` ran)."""
    if not run.exists(EXPERIMENT, PLAN_FILE):
        return None
    return run.read_json(EXPERIMENT, PLAN_FILE, what="confirmation plan", shape=PLAN_SHAPE)


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


def read_evaluation(run: RunDir, folder: str, ckpt: str) -> dict[str, Any]:
    """A seed's evaluation.json (tuner.answers.confirm.trial.evaluate_seed); damaged, a UserError naming it."""
    return run.read_json(EXPERIMENT, folder, ckpt, EVALUATION_FILE, what="seed evaluation", shape=EVALUATION_SHAPE)


def evaluated_checkpoint(run: RunDir, folder: str) -> str | None:
    """The checkpoint of trial folder RUN/confirm/`folder` that holds its evaluation (None: not evaluated)."""
    return next((c for c in reversed(run.listdir(EXPERIMENT, folder))
                 if c.startswith("checkpoint_") and run.exists(EXPERIMENT, folder, c, EVALUATION_FILE)), None)


def seed_records(run: RunDir) -> dict[tuple[str, int], Any]:
    """(configuration id, seed) -> its trial record."""
    return {(r.config.get("config_id"), int(r.config.get("seed", -1))): r
            for r in read_condition(run, EXPERIMENT, "val_ccc_mean", "max")}


def seed_checkpoint(run: RunDir, rec) -> str | None:
    """The trial's checkpoint that holds its evaluation (None: not evaluated yet)."""
    return None if rec is None or not rec.folder else evaluated_checkpoint(run, rec.folder)


def progress(run: RunDir) -> dict[str, Any] | None:
    """Seeds by state, overall and per configuration (None before `confirm` ran)."""
    plan = read_plan(run)
    if plan is None:
        return None
    records = seed_records(run)
    rows, totals = [], {"done": 0, "running": 0, "pending": 0, "error": 0}
    for c in plan["configurations"]:
        counts = {k: 0 for k in totals}
        for seed in plan["seeds"]:
            rec = records.get((c["id"], seed))
            state = seed_state(rec, seed_checkpoint(run, rec) is not None)
            counts["done" if state == "failed" else state] += 1
        rows.append({"id": c["id"], "planned": len(plan["seeds"]), **counts})
        for k in totals:
            totals[k] += counts[k]
    return {"planned": len(plan["configurations"]) * len(plan["seeds"]), **totals,
            "confirm_json": run.exists(EXPERIMENT, CONFIRM_FILE), "configurations": rows}


def seed_state(rec, evaluated: bool) -> str:
    """A seed's state; evaluated = its final checkpoint holds the evaluation (whatever Ray's state file
    says: a driver killed right after the last report may not have recorded the trial as finished)."""
    if evaluated:
        return "done"
    if rec is None or rec.status == "PENDING":
        return "pending"
    return "error" if rec.status == "ERROR" else "running"


def search_cell(search: list[dict[str, Any]]) -> str:
    """What the confirmed configurations were picked from: per condition its finished trials of those planned,
    and whether its study had finished (a confirmation with --partial)."""
    return "; ".join(f"{c['condition']} {c['finished']} of {c['planned']} trials finished"
                     + ("" if c["state"] == "done" else f" (study {c['state']}: stopped before it finished)")
                     for c in search)
