"""confirm.json from seeds' evaluations without training: failed seeds are shown and counted, a
configuration with fewer than 2 finished seeds gets no interval and no test, and only the
method-level test is starred."""
from __future__ import annotations

import numpy as np
import pytest

from model.metrics import ccc
from tuner.answers.confirm.compare import compare
from tuner.answers.confirm.results import summarise
from tuner.answers.confirm.table import format_table

SPLIT = "Test1"
N = 120


def seed_entry(seed: int, status: str, ccc_mean: float = 0.5, val: float = 0.5) -> dict:
    done = status == "done"
    return {"seed": seed, "status": status, "trial_id": f"t{seed}", "best_epoch": 3 if done else None,
            "validation": {"ccc_act": val, "ccc_mean": val, "utterances": 40} if done else None,
            "test": {SPLIT: {"ccc_act": ccc_mean, "ccc_mean": ccc_mean, "utterances": N}} if done else {}}


def configuration(cid: str, kind: str, statuses: list[str], noise: float, rng, predictions: dict, y, speakers):
    """A configuration with one seed per status; each finished seed predicts y plus noise of its own."""
    seeds = []
    for seed, status in enumerate(statuses, start=1):
        preds = y + rng.normal(0, noise * (1 + 0.2 * seed), size=(N, 1))
        predictions[(cid, seed, SPLIT)] = {"index": np.arange(N), "labels": y, "preds": preds,
                                           "attributes": np.array(["act"]), "speakers": speakers}
        seeds.append(seed_entry(seed, status, ccc(y[:, 0], preds[:, 0])))
    conf = {"id": cid, "kind": kind, "conditions": ["c1"], "attributes": ["act"], "seeds": seeds}
    conf["summary"] = summarise(conf, [SPLIT])
    return conf


@pytest.fixture
def confirmation():
    rng = np.random.default_rng(0)
    y = rng.normal(4, 1, size=(N, 1))
    speakers = np.arange(N) % 8
    predictions: dict = {}
    confs = [configuration("A", "search", ["done", "done", "done", "failed", "error"], 0.5, rng, predictions, y,
                           speakers),
             configuration("B", "baseline", ["done"] * 5, 1.5, rng, predictions, y, speakers),
             configuration("C", "baseline", ["done", "failed", "failed", "failed", "failed"], 1.0, rng, predictions,
                           y, speakers)]
    comparisons = compare(confs, {"c1": "A"}, [SPLIT], predictions, resamples=200)
    return confs, comparisons


def test_failed_seeds_are_counted_and_few_seeds_get_no_interval(confirmation):
    confs, _ = confirmation
    a, b, c = confs
    assert (a["summary"]["seeds_done"], a["summary"]["seeds_failed"]) == (3, 2)   # "failed" and "error"
    assert (b["summary"]["seeds_done"], b["summary"]["seeds_failed"]) == (5, 0)
    assert (c["summary"]["seeds_done"], c["summary"]["seeds_failed"]) == (1, 4)
    assert c["summary"]["test"][SPLIT]["ccc_mean"]["ci95"] is None
    assert a["summary"]["test"][SPLIT]["ccc_mean"]["ci95"] is not None


def test_comparisons_name_failed_seeds_and_leave_one_seed_untested(confirmation):
    _, comparisons = confirmation
    by_pair = {(k["a"], k["b"], k["metric"]): k for k in comparisons}
    ab, ac = by_pair["A", "B", "ccc_mean"], by_pair["A", "C", "ccc_mean"]
    assert ab["seeds"] == [1, 2, 3] and ab["seeds_failed"] == {"a": [4, 5], "b": []}
    assert "A: seed(s) 4, 5 failed" in ab["note"]
    assert ab["method"]["p"] is not None and ab["method"]["speakers"] == 8 and ab["method"]["seeds"] == 3
    assert ab["method"]["significant"] is not None
    assert "significant" not in ab["paired_t"] and "significant" not in ab["bootstrap"]   # never starred
    assert ab["method"]["diff"] == pytest.approx(ab["diff"])
    assert ac["method"] is None and ac["paired_t"] is None and ac["bootstrap"] is None
    assert ac["seeds"] == [1] and "C: 1 finished seed(s), no test" in ac["note"]
    assert "C: seed(s) 2, 3, 4, 5 failed" in ac["note"]
    assert ab["method"]["p_holm"] == pytest.approx(ab["method"]["p"])   # the only tested one of its family


def test_table_shows_failed_seeds_and_untested_comparisons(confirmation):
    confs, comparisons = confirmation
    confirm = {"run": "r", "plan": {"seeds": [1, 2, 3, 4, 5]}, "confidence": 0.95, "alpha": 0.05,
               "state": "complete", "test_splits": [SPLIT], "configurations": confs, "best": {"c1": "A"},
               "comparisons": comparisons, "selection": "validation",
               "tests": {"method": "M", "paired_t": "T", "bootstrap": "B", "correction": "Holm", "resamples": 200,
                         "bootstrap_seed": 0}}
    table = format_table(confirm)
    assert "| A (best) | 3/5 (2 failed) |" in table and "| C | 1/5 (4 failed) |" in table
    assert "| B | 5/5 |" in table
    row = next(line for line in table.splitlines() if line.startswith("| A | C | Test1 | ccc_mean"))
    assert row.count("n/a") == 3 and "no test" in row
    cells = next(line for line in table.splitlines() if line.startswith("| A | B | Test1 | ccc_mean")).split(" | ")
    assert cells[7].endswith(" *") and sum("*" in cell for cell in cells) == 1   # only p (method) is starred


def test_predictions_saved_before_speaker_codes_take_them_from_the_store(tiny_store):
    """A seed evaluated before its predictions held speaker codes (confirm.json version 1) gets them
    from the run's store when `confirm NAME` rewrites confirm.json."""
    import io

    from model.store import FeatureStore
    from tuner.answers.confirm.results import _predictions

    store = FeatureStore.open(tiny_store)
    index = store.ids("Validation", labeled=True)
    buf = io.BytesIO()
    np.savez(buf, index=index, labels=np.zeros((len(index), 1)), preds=np.zeros((len(index), 1)),
             attributes=np.array(["act"]))
    got = _predictions(buf.getvalue(), str(tiny_store))
    assert np.array_equal(got["speakers"], store.groups(index, "speaker")) and (got["speakers"] >= 0).any()


# ---- issue 21 §1: the seeds' files `confirm` reads back (evaluation.json, predictions-<split>.npz) ------------
def evaluated_run(tmp_path, store, evaluation: bytes | None = None, predictions: bytes | None = None):
    """A run whose confirmation (one configuration, seeds 1 and 2) is evaluated, as the trials leave it
    (RUN/confirm/trial_*/checkpoint_000000/); seed 1's files replaced by `evaluation` / `predictions` when given."""
    import io
    import json

    from tune_helpers import SMOKE
    from tuner.runs.run_dir import RunDir, new_manifest
    from tuner.space.parse import load_space

    run = RunDir(tmp_path, "demo")
    run.write_manifest({**new_manifest(load_space(SMOKE), SMOKE.read_text(), str(store), "demo", "journal"),
                        "conditions": [{"label": "all", "values": {}, "state": "done"}]})
    plan = {"seeds": [1, 2], "top": 1, "splits": None, "baselines": [],
            "configurations": [{"id": "all/rank1", "kind": "search", "conditions": ["all"], "condition_values": {},
                                "rank": 1, "trial_id": "s", "config": {"attributes": ["act"], "epochs": 2}}]}
    rng = np.random.default_rng(0)
    entries = []
    for seed in (1, 2):
        folder = f"trial_{seed}"
        entries.append([json.dumps({"trial_id": f"t{seed}", "status": "TERMINATED", "relative_logdir": folder,
                                    "config": {"config_id": "all/rank1", "seed": seed}}), "{}"])
        y = rng.normal(4, 1, size=(N, 1))
        buf = io.BytesIO()
        np.savez(buf, index=np.arange(N), labels=y, preds=y + rng.normal(0, 0.5, size=(N, 1)),
                 speakers=np.arange(N) % 8, attributes=np.array(["act"]))
        result = {"ccc_act": 0.5, "ccc_mean": 0.5, "utterances": N}
        good = json.dumps({"best_epoch": 2, "validation_split": "Validation", "test_splits": [SPLIT],
                           "validation": result, "test": {SPLIT: result}}).encode()
        ckpt = (folder, "checkpoint_000000")
        run.write_bytes(evaluation if seed == 1 and evaluation is not None else good, "confirm", *ckpt, "evaluation.json")
        run.write_bytes(predictions if seed == 1 and predictions is not None else buf.getvalue(),
                        "confirm", *ckpt, f"predictions-{SPLIT}.npz")
    run.write_text(json.dumps({"trial_data": entries}), "confirm", "experiment_state-2026-01-01_00-00-00.json")
    return run, plan


def test_collected_results_read_back_as_confirm_json(tmp_path, tiny_store):
    """confirm.json as collect writes it passes read_confirm's shape check (what report and export read)."""
    from tuner.answers.confirm.results import collect, write_results
    from tuner.runs.confirm_files import read_confirm

    run, plan = evaluated_run(tmp_path, tiny_store)
    write_results(run, collect(run, plan, resamples=100))
    confirm = read_confirm(run)
    assert confirm["configurations"][0]["summary"]["seeds_done"] == 2


@pytest.mark.parametrize("evaluation, predictions, problem", [
    (b'{"best_epoch": 2, "valid', None, "damaged seed evaluation: Unterminated string"),
    (b"", None, "damaged seed evaluation: Expecting value"),
    (b"[2]", None, "damaged seed evaluation: expected a JSON object, found list"),
    (b'{"best_epoch": "two", "validation_split": "Validation", "test_splits": [], "validation": null, "test": {}}',
     None, "damaged seed evaluation: best_epoch: expected an integer or null, found a string"),
    (None, b"PK\x03\x04 not a zip", "damaged seed predictions: BadZipFile"),
    (None, b"", "damaged seed predictions: EOFError"),
])
def test_damaged_seed_files_are_named(tmp_path, tiny_store, evaluation, predictions, problem):
    from model.errors import UserError
    from tuner.answers.confirm.results import collect

    run, plan = evaluated_run(tmp_path, tiny_store, evaluation, predictions)
    name = "evaluation.json" if evaluation is not None else f"predictions-{SPLIT}.npz"
    with pytest.raises(UserError) as caught:
        collect(run, plan, resamples=100)
    assert str(caught.value).startswith(f"{tmp_path}/demo/confirm/trial_1/checkpoint_000000/{name}: {problem}")


def test_configuration_errors_are_one_line_per_message_naming_configurations_seeds_and_the_fix(tmp_path):
    """Seeds that failed on a configuration error (tuner.runs.config_errors): one line per distinct message, each
    naming its configurations and seeds and what to change (a baseline file; a search pick: --top or the store)."""
    from tuner.answers.confirm.results import config_error_lines
    from tuner.answers.confirm.table import failed_seed_items
    from tuner.runs.run_dir import RunDir

    def conf(cid: str, kind: str, errors: list[str | None]) -> dict:
        seeds = [{"seed": i, "status": "done"} if e is None else
                 {"seed": i, "status": "failed", "error": e, "config_error": True} for i, e in enumerate(errors, 1)]
        return {"id": cid, "kind": kind, "baseline_file": f"/b/{cid}.yaml" if kind == "baseline" else None,
                "seeds": seeds}

    too_many, no_model = "fewer than num_clusters=500", "init_model /m.pt: no such file"
    confirm = {"configurations": [conf("c/rank2", "search", [too_many, too_many]), conf("ok", "baseline", [None]),
                                  conf("big", "baseline", [too_many, None]), conf("init", "baseline", [no_model])]}
    run = RunDir(tmp_path, "r")
    lines = config_error_lines(run, confirm)
    assert len(lines) == 2
    assert lines[0].startswith(f"{too_many} (configuration c/rank2: seed(s) 1, 2; configuration big: seed(s) 1: "
                               "failed on it, not retried; confirming again cannot help: fix or leave out --baseline "
                               "/b/big.yaml and confirm without c/rank2 (a smaller --top) or fix the store, then move")
    assert lines[1].startswith(f"{no_model} (configuration init: seed(s) 1: failed on it, not retried")
    assert lines[1].endswith(f"then move {tmp_path}/r/confirm away and run `python -m tuner confirm r` again)")
    assert failed_seed_items(confirm) == [
        f"- c/rank2: seed(s) 1, 2: {too_many} (a configuration error: not retried; fix or leave out the configuration)",
        f"- big: seed(s) 1: {too_many} (a configuration error: not retried; fix or leave out the configuration)",
        f"- init: seed(s) 1: {no_model} (a configuration error: not retried; fix or leave out the configuration)"]
