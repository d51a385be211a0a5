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
