"""The confirmation's comparisons: each condition's best configuration (highest mean validation ccc_mean over
its seeds) against its baselines, and the conditions' bests against each other, on every test split and
shared metric, with the tests of tuner.answers.confirm.significance and Holm's correction per family.
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from tuner.answers.confirm.significance import (ALPHA, CONFIDENCE, holm, method_test, paired_bootstrap,
                                                paired_t_test)
from tuner.runs.confirm_files import UNFINISHED

BOOTSTRAP_SEED = 0
TESTS = ("method", "paired_t", "bootstrap")   # the comparisons' tests; only "method" is starred
# confirm.json's `selection`: how a condition's best configuration is chosen (best_per_condition)
BEST_CONFIGURATION_RULE = ("the best configuration of a condition is the one with the highest mean validation "
                           "ccc_mean over its seeds; the test splits only measure it")


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
