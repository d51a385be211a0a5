"""Whether every trial of a search space reports the space's metrics.

A trial keeps as its best model the epoch best by the search's metric, and the study ranks trials by it: a
configuration that never reports the metric (loss_triplet without temporal: triplet, val_ccc_val without val
among the attributes, ssl_loss_ce with unlabeled_pool: 0, nmi with one epoch; model/reported_metrics.py) would
end with no best model and no score; HyperBand, which may compare trials at epoch 1, fails on a metric without
a value there (nmi). The space is refused instead, naming the parameter or condition value
that leads there. Each configuration is followed the way the sampler draws it (tuner.space.schema
SpaceSampler): conditions, then the parameters in order, each only when its `when` holds; a numeric range is
checked at both ends.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, NoReturn

from model.config import TrainConfig
from model.reported_metrics import NOT_IN_FIRST_EPOCH, REPORTED_WHEN
from tuner.space.schema import Parameter, SearchSpace

Fail = Callable[[str, str], NoReturn]


def check_reported(space: SearchSpace, fail: Fail) -> None:
    """`fail("metric", ...)` for the first metric of `space` that some configuration never reports, or that
    HyperBand would judge in epoch 1 without a value."""
    if space.metric in NOT_IN_FIRST_EPOCH and space.scheduler.type == "hyperband":
        fail("metric", f"{space.metric!r} has no value in epoch 1, where scheduler hyperband may already compare "
             "trials (it needs every trial's value there); use scheduler asha or median (they wait for a value) or "
             "none, or choose another metric")
    for metric in space.metrics:
        needs = REPORTED_WHEN.get(metric)
        if needs is None:
            continue
        for value, origin in settings(space, needs.key):
            if not needs.holds(value):
                fail("metric", f"{metric!r} is never reported by a trial where {origin}: a trial reports it only "
                     f"with {needs.text}; make every configuration of the space have that or choose another "
                     "metric")


def settings(space: SearchSpace, key: str) -> Iterator[tuple[Any, str]]:
    """The value of the TrainConfig key `key` in each configuration of `space`, with where it comes from."""
    referenced = {name for p in space.parameters for name in p.when} | {key}
    default = getattr(TrainConfig(), key)
    unset = (f"no `when` of parameters.{key} holds, so {key} is the default {default!r}"
             if any(p.name == key for p in space.parameters) else f"{key} is left at its default {default!r}")
    epochs = space.budget.max_epochs
    for condition in space.condition_values():
        values = {**condition, "epochs": epochs}
        origins = {**{k: f"conditions.{k} is {v!r}" for k, v in condition.items()},
                   "epochs": f"budget.max_epochs is {epochs}"}
        yield from _walk(space.parameters, referenced, (key, default, unset), values, origins)


def _walk(params: list[Parameter], referenced: set[str], target: tuple[str, Any, str], values: dict[str, Any],
          origins: dict[str, str]) -> Iterator[tuple[Any, str]]:
    """Follow `params` in order from `values` so far, branching on the values of the `referenced` ones (those
    a `when` or the target depends on); at the end, the target key's value and origin. `target`: the key,
    its default and the origin of the default."""
    for i, p in enumerate(params):
        if p.name in referenced and p.active(values):
            for value, origin in _drawn(p):
                yield from _walk(params[i + 1:], referenced, target, {**values, p.name: value},
                                 {**origins, p.name: origin})
            return
    key, default, unset = target
    yield (values[key], origins[key]) if key in values else (default, unset)


def _drawn(p: Parameter) -> list[tuple[Any, str]]:
    """The values parameter `p` can take that matter here (a range: its ends), with where each comes from."""
    if p.kind == "fixed":
        return [(p.value, f"parameters.{p.name} is {p.value!r}")]
    if p.kind == "categorical":
        return [(c, f"parameters.{p.name} chooses {c!r}") for c in p.choices]
    return [(end, f"parameters.{p.name} ranges from {p.low} to {p.high}, reaching {end!r}") for end in (p.low, p.high)]
