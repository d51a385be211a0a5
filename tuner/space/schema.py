"""The search space as data: its parts (parameters, scheduler, searcher, budget, resources), the
condition grid and labels, and the define-by-run sampler handed to OptunaSearch.

tuner.space.parse parses and validates the YAML into these. `SpaceSampler` is a module-level class
(not a closure) so that the searcher state pickles and survives a resume; searchers pickled before this
module existed name it `tuner.search_space.SpaceSampler`, which tuner.MOVED leads here.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any


@dataclass
class Parameter:
    """One searched (or fixed) TrainConfig field; `when` maps other parameters to allowed values."""
    name: str
    kind: str                      # float | int | categorical | fixed
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: list[Any] = field(default_factory=list)
    value: Any = None
    when: dict[str, list[Any]] = field(default_factory=dict)

    def active(self, values: dict[str, Any]) -> bool:
        """True when every `when` clause holds for the values chosen so far."""
        return all(name in values and values[name] in allowed for name, allowed in self.when.items())


@dataclass
class Scheduler:
    type: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 2.0
    min_samples_required: int = 3
    rank_by: str = "current"          # current: the epoch's metric; best: the trial's best so far


@dataclass
class Searcher:
    type: str = "tpe"
    seed: int = 0
    n_startup_trials: int = 10


@dataclass
class Budget:
    num_samples: int = 10
    max_epochs: int = 10
    time_limit_s: float | None = None


@dataclass
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0
    max_concurrent_trials: int = 0   # 0 = as many as the resources allow


@dataclass
class SearchSpace:
    """A validated search space (see search_spaces/README.md for the YAML schema)."""
    source: str
    metrics: list[str]
    modes: list[str]
    budget: Budget
    scheduler: Scheduler
    searcher: Searcher
    resources: Resources
    conditions: dict[str, list[Any]]
    parameters: list[Parameter]

    @property
    def metric(self) -> str:
        """The metric that ranks trials (the first one for a multi-objective search)."""
        return self.metrics[0]

    @property
    def mode(self) -> str:
        return self.modes[0]

    @property
    def multi_objective(self) -> bool:
        return self.searcher.type == "multi_objective"

    def condition_values(self) -> list[dict[str, Any]]:
        """The grid of conditions: one study per combination ([{}] when there are none)."""
        combos: list[dict[str, Any]] = [{}]
        for name, values in self.conditions.items():
            combos = [{**c, name: v} for c in combos for v in values]
        return combos


def best_metric(metric: str) -> str:
    """The name under which a trial reports its best value so far of `metric` (scheduler.rank_by: best)."""
    return f"best_{metric}"


def condition_label(condition: dict[str, Any]) -> str:
    """Folder-safe label of one condition, e.g. `labeled_ratio=0.1` (`all` without conditions)."""
    if not condition:
        return "all"
    return ",".join(f"{k}={_fmt(v)}" for k, v in condition.items())


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "+".join(_fmt(v) for v in value)
    text = str(value)
    if "/" in text or "\\" in text:   # a path or URI (init_model): its name and a hash, not nested folders
        stem = PurePosixPath(text.replace("\\", "/").rstrip("/")).stem or "path"
        return f"{stem}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    return text


class SpaceSampler:
    """Define-by-run function for OptunaSearch: samples active parameters, returns the fixed ones."""

    def __init__(self, space: SearchSpace, condition: dict[str, Any]):
        self.parameters = space.parameters
        self.condition = dict(condition)
        self.epochs = space.budget.max_epochs

    def __call__(self, trial) -> dict[str, Any]:
        values: dict[str, Any] = dict(self.condition)
        fixed: dict[str, Any] = dict(self.condition)
        for p in self.parameters:
            if not p.active(values):
                continue
            if p.kind == "fixed":
                values[p.name] = fixed[p.name] = p.value
            elif p.kind == "categorical":
                values[p.name] = trial.suggest_categorical(p.name, p.choices)
            elif p.kind == "int":
                values[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1),
                                                   log=p.log)
            else:
                values[p.name] = trial.suggest_float(p.name, float(p.low), float(p.high), step=p.step,
                                                     log=p.log)
        fixed["epochs"] = self.epochs
        return fixed


def trial_threads(cpus: float) -> int:
    """The torch/faiss threads of a trial given its CPUs (at least 1)."""
    return max(1, int(cpus))
