"""tuner.search.experiment's builders for the space's scheduler and searcher types no search test runs:
HyperBand, the median stopping rule and the random searcher (no Ray cluster needed)."""
from __future__ import annotations

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler, MedianStoppingRule

from tuner.search.experiment import make_scheduler, make_searcher
from tuner.runs.studies import JOURNAL_STORAGE
from tuner.runs.run_dir import RunDir
from tuner.search.scheduler_state import ResultlessMedian, ResumableASHA
from tuner.space.parse import parse_space

PARAMETERS = {"temporal": {"choices": ["gru", "triplet"]}, "lr_adam": {"low": 1e-4, "high": 1e-2, "log": True},
              "triplet_margin": {"low": 0.2, "high": 2.0, "when": {"temporal": "triplet"}}}


def space(**sections):
    return parse_space({"metric": "val_ccc_mean", "mode": "max", "budget": {"num_samples": 4, "max_epochs": 9},
                        "conditions": {"labeled_ratio": [0.5, 1.0]}, "parameters": PARAMETERS, **sections})


def test_hyperband_median_asha_and_none_schedulers_get_the_space_settings(tmp_path):
    run, label = RunDir(tmp_path, "r"), "labeled_ratio=0.5"
    hyperband = make_scheduler(space(scheduler={"type": "hyperband", "reduction_factor": 3}), run, label)
    assert type(hyperband) is HyperBandScheduler
    assert (hyperband._time_attr, hyperband._max_t_attr, hyperband._eta) == ("training_iteration", 9, 3.0)
    median = make_scheduler(space(scheduler={"type": "median", "grace_period": 2, "min_samples_required": 4}), run, label)
    assert type(median) is ResultlessMedian and isinstance(median, MedianStoppingRule)
    assert (median._time_attr, median._grace_period, median._min_samples_required) == ("training_iteration", 2, 4)
    assert type(make_scheduler(space(), run, label)) is ResumableASHA   # the default
    assert isinstance(make_scheduler(space(), run, label), ASHAScheduler)
    assert type(make_scheduler(space(scheduler="none"), run, label)) is FIFOScheduler


def _first_configs(s, index: int, run: RunDir, n: int = 3) -> list[dict]:
    searcher = make_searcher(s, {"labeled_ratio": s.conditions["labeled_ratio"][index]}, index, run, JOURNAL_STORAGE)
    assert isinstance(searcher._sampler, optuna.samplers.RandomSampler)
    return [searcher.suggest(f"t{i}") for i in range(n)]


def test_random_searcher_is_seeded_per_condition(tmp_path):
    s = space(searcher={"type": "random", "seed": 7})
    first = _first_configs(s, 0, RunDir(tmp_path, "a"))
    again = _first_configs(s, 0, RunDir(tmp_path, "b"))      # the same seed, in another run
    other = _first_configs(s, 1, RunDir(tmp_path, "c"))      # the next condition: seed + 1
    strip = [[{k: v for k, v in c.items() if k != "labeled_ratio"} for c in cs] for cs in (first, again, other)]
    assert strip[0] == strip[1] and strip[0] != strip[2]
    assert all(c["labeled_ratio"] == 0.5 for c in first) and all(c["labeled_ratio"] == 1.0 for c in other)
    assert all(("triplet_margin" in c) == (c["temporal"] == "triplet") for c in first + other)
    assert all(1e-4 <= c["lr_adam"] <= 1e-2 for c in first)
