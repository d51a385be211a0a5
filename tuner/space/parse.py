"""Search spaces from YAML (schema: search_spaces/README.md): parsing and validation.

A space is checked completely before Ray starts; every problem raises `SpaceError` naming the file,
the key and what was expected. The result is a tuner.space.schema.SearchSpace; the define-by-run
sampler (SpaceSampler) and condition labels live there too.
"""
from __future__ import annotations

import math
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable, NoReturn

from model.corpora import ATTRIBUTES
from model.config import INT_RANGES, TrainConfig, field_type
from model.errors import ConfigError
from model.yaml_files import read_yaml
from tuner.space.reported import check_reported
from tuner.space.schema import Budget, Parameter, Resources, Scheduler, SearchSpace, Searcher

# The parser's error callback: fail(key, problem) raises SpaceError naming the file, the key and the problem.
Fail = Callable[[str, str], NoReturn]
SCHEDULERS = ("asha", "none", "median", "hyperband")
SEARCHERS = ("tpe", "random", "multi_objective")
MODES = ("max", "min")
TOP_LEVEL_KEYS = ("metric", "mode", "budget", "scheduler", "searcher", "resources", "conditions", "parameters",
                  "per_attribute")
BUDGET_KEYS = ("num_samples", "max_epochs", "time_limit_s")
RESOURCE_KEYS = ("cpu", "gpu", "max_concurrent_trials")
SCHEDULER_KEYS = {"asha": ("type", "grace_period", "reduction_factor", "rank_by"),
                  "hyperband": ("type", "reduction_factor", "rank_by"),
                  "median": ("type", "grace_period", "min_samples_required", "rank_by"),
                  "none": ("type",)}
# What an early-stopping scheduler compares: the metric of the epoch just finished, or the trial's
# best so far (reported as best_<metric> every epoch; see docs/search.md, "Early stopping on signal").
RANK_BY = ("current", "best")
SEARCHER_KEYS = ("type", "seed", "n_startup_trials")
PARAM_KEYS = ("type", "low", "high", "log", "step", "choices", "value", "when")
MAX_SAMPLES = 100_000    # trials per condition
MAX_RESOURCE = 1024      # CPUs or GPUs per trial
# Keys the search owns: the budget sets the epochs, the trial's resources set threads and device.
RESERVED = {"epochs": "budget.max_epochs", "num_threads": "resources.cpu", "device": "resources.gpu"}
# Keys a per_attribute space sets itself: each attribute's study trains a model of that attribute alone.
PER_ATTRIBUTE_OWNS = ("attributes", "attribute_weights")
# Metrics a trial reports (see docs/architecture.md, Trainer.run_epoch).
METRICS = ("val_ccc_mean", "val_ccc_act", "val_ccc_dom", "val_ccc_val", "loss_total", "loss_ce",
           "loss_ccc", "loss_triplet", "ssl_loss_ce", "nmi")


class SpaceError(ConfigError):
    """A search-space file that cannot be used (the message names the file and the key)."""


# ---- loading and validation --------------------------------------------------------------------

PATH_KEYS = ("init_model",)   # TrainConfig keys that name files: made absolute before trials change directory


def absolute_model_paths(raw: Any, source: str) -> bool:
    """Make the file paths of PATH_KEYS in a raw space absolute (relative to the working directory), checking
    that each exists; True when something changed. Trials run in their own directories."""
    changed = False

    def fix(value: Any, key: str) -> Any:
        nonlocal changed
        if not isinstance(value, str):
            return value
        path = Path(value).expanduser()
        if not path.exists():
            raise SpaceError(f"{source}: {key}: {value!r}: model file not found")
        if str(path.resolve()) != value:
            changed = True
        return str(path.resolve())

    if not isinstance(raw, dict):
        return False
    per_attribute = raw.get("per_attribute")
    tables = [("parameters", raw.get("parameters")), ("conditions", raw.get("conditions"))]
    if isinstance(per_attribute, dict):
        tables += [(f"per_attribute.{attr}", table) for attr, table in per_attribute.items()]
    for section, table in tables:
        if not isinstance(table, dict):
            continue
        for name in PATH_KEYS:
            if name not in table:
                continue
            spec, key = table[name], f"{section}.{name}"
            if isinstance(spec, list):
                table[name] = [fix(v, key) for v in spec]
            elif isinstance(spec, dict):
                for field_name in ("value", "choices"):
                    if isinstance(spec.get(field_name), list):
                        spec[field_name] = [fix(v, f"{key}.{field_name}") for v in spec[field_name]]
                    elif field_name in spec:
                        spec[field_name] = fix(spec[field_name], f"{key}.{field_name}")
            else:
                table[name] = fix(spec, key)
    return changed


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file; any problem raises SpaceError (exit code 2)."""
    return parse_space(read_yaml(path, SpaceError, "search-space file"), str(path))


def parse_space(raw: Any, source: str = "search space") -> SearchSpace:
    """Validate the parsed YAML of a space; `source` names the file in messages."""
    def fail(key: str, problem: str) -> NoReturn:
        raise SpaceError(f"{source}: {key}: {problem}")

    if not isinstance(raw, dict):
        raise SpaceError(f"{source}: expected a mapping with keys {', '.join(TOP_LEVEL_KEYS)} at the top level")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            fail(str(key), f"unknown key; expected one of {', '.join(TOP_LEVEL_KEYS)}")
    known = {f.name: f for f in fields(TrainConfig)}

    searcher = _parse_searcher(raw.get("searcher"), fail)
    metrics, modes = _parse_metric(raw.get("metric", "val_ccc_mean"), raw.get("mode", "max"), searcher, fail)
    scheduler = _parse_scheduler(raw.get("scheduler"), searcher, fail)
    budget = _parse_budget(raw.get("budget"), fail)
    resources = _parse_resources(raw.get("resources"), fail)
    if scheduler.type == "asha" and scheduler.grace_period > budget.max_epochs:
        fail("scheduler.grace_period", f"{scheduler.grace_period} is larger than budget.max_epochs="
             f"{budget.max_epochs}: no trial could ever be stopped early")

    conditions = _parse_conditions(raw.get("conditions"), known, fail)
    parameters = _parse_parameters(raw.get("parameters"), known, conditions, fail)
    if "per_attribute" in raw:
        conditions, parameters = _parse_per_attribute(raw, known, metrics, conditions, parameters, fail)
    space = SearchSpace(source, metrics, modes, budget, scheduler, searcher, resources, conditions, parameters)
    check_reported(space, fail)   # a metric some configuration never reports: no best model, no score
    return space


def _parse_searcher(raw: Any, fail: Fail) -> Searcher:
    if raw is None:
        return Searcher()
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        fail("searcher", f"expected a mapping (type, seed, n_startup_trials) or a name, got {raw!r}")
    _only(raw, SEARCHER_KEYS, "searcher", fail)
    s = Searcher()
    s.type = raw.get("type", "tpe")
    if s.type not in SEARCHERS:
        fail("searcher.type", f"{s.type!r} is not a searcher; expected one of {', '.join(SEARCHERS)}")
    s.seed = _int(raw.get("seed", 0), "searcher.seed", fail, minimum=0)
    s.n_startup_trials = _int(raw.get("n_startup_trials", 10), "searcher.n_startup_trials", fail, minimum=1)
    return s


def _parse_metric(metric: Any, mode: Any, searcher: Searcher, fail: Fail) -> tuple[list[str], list[str]]:
    metrics = metric if isinstance(metric, list) else [metric]
    if not metrics or not all(isinstance(m, str) for m in metrics):
        fail("metric", f"expected a metric name or a list of names, got {metric!r}")
    for m in metrics:
        if m not in METRICS:
            fail("metric", f"{m!r} is not a reported metric; expected one of {', '.join(METRICS)}")
    if len(set(metrics)) != len(metrics):
        fail("metric", f"{metrics} names a metric twice")
    modes = mode if isinstance(mode, list) else [mode] * len(metrics)
    if len(modes) != len(metrics):
        fail("mode", f"{len(modes)} modes for {len(metrics)} metrics; give one mode or one per metric")
    for m in modes:
        if m not in MODES:
            fail("mode", f"{m!r} is not a mode; expected max or min")
    if len(metrics) > 1 and searcher.type != "multi_objective":
        fail("metric", f"several metrics {metrics} need searcher.type: multi_objective")
    if searcher.type == "multi_objective" and len(metrics) < 2:
        fail("metric", "searcher.type multi_objective needs a list of at least two metrics")
    return metrics, modes


def _parse_scheduler(raw: Any, searcher: Searcher, fail: Fail) -> Scheduler:
    default = "none" if searcher.type == "multi_objective" else "asha"
    if raw is None:
        raw = {"type": default}
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        fail("scheduler", f"expected a mapping or one of {', '.join(SCHEDULERS)}, got {raw!r}")
    s = Scheduler()
    s.type = raw.get("type", default)
    if s.type not in SCHEDULERS:
        fail("scheduler.type", f"{s.type!r} is not a scheduler; expected one of {', '.join(SCHEDULERS)}")
    _only(raw, SCHEDULER_KEYS[s.type], f"scheduler ({s.type})", fail)
    if searcher.type == "multi_objective" and s.type != "none":
        fail("scheduler.type", f"{s.type!r} stops trials early on one metric; a multi_objective search "
             "needs scheduler: none")
    s.grace_period = _int(raw.get("grace_period", 1), "scheduler.grace_period", fail, minimum=1)
    s.rank_by = raw.get("rank_by", "current")
    if s.rank_by not in RANK_BY:
        fail("scheduler.rank_by", f"{s.rank_by!r}: expected current (the epoch's metric) or best (the trial's "
             "best so far)")
    s.min_samples_required = _int(raw.get("min_samples_required", 3), "scheduler.min_samples_required",
                                  fail, minimum=1)
    rf = raw.get("reduction_factor", 2)
    if isinstance(rf, bool) or not isinstance(rf, (int, float)) or not 1 < rf <= 1000:
        fail("scheduler.reduction_factor", f"{rf!r}: expected a number > 1 and <= 1000")
    s.reduction_factor = float(rf)
    return s


def _parse_budget(raw: Any, fail: Fail) -> Budget:
    raw = _section(raw, BUDGET_KEYS, "budget", fail)
    b = Budget()
    b.num_samples = _int(raw.get("num_samples", b.num_samples), "budget.num_samples", fail, minimum=1,
                         maximum=MAX_SAMPLES)
    b.max_epochs = _int(raw.get("max_epochs", b.max_epochs), "budget.max_epochs", fail, minimum=1,
                        maximum=INT_RANGES["epochs"][1])
    limit = raw.get("time_limit_s")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))
                              or not 0 < limit < math.inf):
        fail("budget.time_limit_s", f"{limit!r}: expected a number of seconds > 0 (or leave it out)")
    b.time_limit_s = None if limit is None else float(limit)
    return b


def _parse_resources(raw: Any, fail: Fail) -> Resources:
    raw = _section(raw, RESOURCE_KEYS, "resources", fail)
    r = Resources()
    for key in ("cpu", "gpu"):
        v = raw.get(key, getattr(r, key))
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= MAX_RESOURCE:
            fail(f"resources.{key}", f"{v!r}: expected a number >= 0 and <= {MAX_RESOURCE}")
        setattr(r, key, float(v))
    if r.cpu <= 0:
        fail("resources.cpu", f"{r.cpu!r}: a trial needs some CPU; expected a number > 0")
    if r.gpu > 1 and r.gpu != int(r.gpu):
        fail("resources.gpu", f"{r.gpu!r}: a fraction must be below 1, more than one GPU a whole number")
    r.max_concurrent_trials = _int(raw.get("max_concurrent_trials", 0), "resources.max_concurrent_trials",
                                   fail, minimum=0)
    return r


def _parse_conditions(raw: Any, known: dict, fail: Fail) -> dict[str, list[Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        fail("conditions", f"expected a mapping of config key -> list of values, got {raw!r}")
    out = {}
    for name, values in raw.items():
        key = f"conditions.{name}"
        _check_name(name, known, key, fail)
        if not isinstance(values, list) or not values:
            fail(key, f"expected a non-empty list of values (one study per value), got {values!r}")
        if len({repr(v) for v in values}) != len(values):
            fail(key, f"{values} lists a value twice")
        for v in values:
            _check_value(name, v, key, fail)
        out[str(name)] = list(values)
    return out


def _parse_parameters(raw: Any, known: dict, conditions: dict, fail: Fail,
                      where: Callable[[str], str] = "parameters.{}".format, may_lapse=()) -> list[Parameter]:
    """The parameters in `raw` (a mapping), in its order; `where(name)` is the key messages name. A `when`
    that can never hold is an error, except for the parameters named in `may_lapse`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        fail("parameters", f"expected a mapping of config key -> distribution or value, got {raw!r}")
    params: list[Parameter] = []
    seen: dict[str, Parameter] = {}
    for name, spec in raw.items():
        key = where(name)
        _check_name(name, known, key, fail)
        if name in conditions:
            fail(key, "is also a condition; a key is either swept as a condition or searched, not both")
        p = _parse_parameter(str(name), spec, key, fail)
        for other, allowed in p.when.items():
            if other in conditions:
                bad = [v for v in allowed if v not in conditions[other]]
                if bad:
                    fail(f"{key}.when.{other}", f"{bad} never occurs; the condition takes {conditions[other]}")
                continue
            if other == name:
                fail(f"{key}.when", "a parameter cannot depend on itself")
            if other not in seen:
                where = ("is defined later; list it before" if other in raw
                         else "is not a parameter or condition of this space")
                fail(f"{key}.when.{other}", f"{other!r} {where} {name!r}")
            q = seen[other]
            possible = q.choices if q.kind == "categorical" else [q.value] if q.kind == "fixed" else None
            if possible is None:
                fail(f"{key}.when.{other}",
                     f"{other!r} is a numeric range; conditions need a categorical or fixed parameter")
            bad = [v for v in allowed if v not in possible]
            if bad and name not in may_lapse:
                fail(f"{key}.when.{other}", f"{bad} is never chosen; {other} takes {possible}")
        params.append(p)
        seen[p.name] = p
    return params


def _parse_per_attribute(raw: dict, known: dict, metrics: list[str], conditions: dict, shared: list[Parameter],
                         fail: Fail) -> tuple[dict[str, list[Any]], list[Parameter]]:
    """`per_attribute: {act: {KEY: spec, ...}, val: {...}}`: one study per attribute, each training a model of
    that attribute alone (condition `attributes: [act]`, so its val_ccc_mean is its own CCC), its entries
    replacing or adding to the shared `parameters` for that attribute only. Returned as that condition and
    the parameters, each attribute's own ones active (`when`) in its study alone."""
    table = raw["per_attribute"]
    if not isinstance(table, dict) or not table:
        fail("per_attribute", f"expected a mapping of attribute ({', '.join(ATTRIBUTES)}) -> its parameters, "
             f"e.g. {{act: {{num_clusters: 10}}, val: {{num_clusters: 30}}}}, got {table!r}")
    if conditions:
        fail("per_attribute", "cannot be combined with conditions (each attribute is one condition); "
             "run one per_attribute search per condition")
    for attr, overrides in table.items():
        if attr not in ATTRIBUTES:
            fail(f"per_attribute.{attr}", f"unknown attribute; expected one of {', '.join(ATTRIBUTES)}")
        if overrides is not None and not isinstance(overrides, dict):
            fail(f"per_attribute.{attr}", f"expected a mapping of config key -> distribution or value "
                 f"(or nothing), got {overrides!r}")
    for m in metrics:
        if m.startswith("val_ccc_") and m != "val_ccc_mean":
            fail("metric", f"{m!r}: in a per_attribute space each study ranks its own attribute's model; use "
                 "val_ccc_mean (a one-attribute model's val_ccc_mean is that attribute's CCC)")
    for p in shared:
        if p.name in PER_ATTRIBUTE_OWNS:
            fail(f"parameters.{p.name}", "is set by per_attribute (each study trains its attribute alone); "
                 "remove it")
    shared_raw = raw.get("parameters") or {}
    own: dict[str, list[Parameter]] = {}
    for attr, overrides in table.items():
        overrides = overrides or {}
        for name in overrides:
            if name in PER_ATTRIBUTE_OWNS:
                fail(f"per_attribute.{attr}.{name}", "is set by per_attribute (the study trains "
                     f"{attr} alone); remove it")
        where = lambda n, a=attr, o=overrides: f"per_attribute.{a}.{n}" if n in o \
            else f"per_attribute.{a}: parameters.{n}"   # noqa: E731
        # a shared parameter may lapse for one attribute (triplet_margin when the attribute fixes temporal: gru)
        effective = _parse_parameters({**shared_raw, **overrides}, known, {}, fail, where,
                                      may_lapse=set(shared_raw) - set(overrides))
        own[attr] = [p for p in effective if p.name in overrides]
    return {"attributes": [[a] for a in table]}, _merge_attribute_parameters(shared, own)


def _merge_attribute_parameters(shared: list[Parameter], own: dict[str, list[Parameter]]) -> list[Parameter]:
    """The shared parameters (active for the attributes that do not replace them), each followed by the
    attributes' replacements, then the attributes' additions; an attribute's own ones active only in its study."""
    def only_for(p: Parameter, attrs: list[str]) -> Parameter:
        return replace(p, when={**p.when, "attributes": [[a] for a in attrs]})

    out: list[Parameter] = []
    names = {p.name for p in shared}
    for p in shared:
        replacing = [a for a, ps in own.items() if any(q.name == p.name for q in ps)]
        keeping = [a for a in own if a not in replacing]
        if keeping:
            out.append(only_for(p, keeping) if replacing else p)
        out += [only_for(q, [a]) for a in replacing for q in own[a] if q.name == p.name]
    out += [only_for(q, [a]) for a, ps in own.items() for q in ps if q.name not in names]
    return out


def _parse_parameter(name: str, spec: Any, key: str, fail: Fail) -> Parameter:
    if not isinstance(spec, dict):
        # a bare value (or a bare list for list-typed keys such as attributes) is a fixed value
        _check_value(name, spec, key, fail)
        return Parameter(name, "fixed", value=spec)
    _only(spec, PARAM_KEYS, key, fail)
    when = _parse_when(spec.get("when"), f"{key}.when", fail)
    if "value" in spec:
        extra = [k for k in spec if k not in ("value", "when")]
        if extra:
            fail(key, f"a fixed value takes no {', '.join(extra)}")
        _check_value(name, spec["value"], f"{key}.value", fail)
        return Parameter(name, "fixed", value=spec["value"], when=when)
    if "choices" in spec:
        extra = [k for k in spec if k not in ("choices", "when", "type")]
        if extra:
            fail(key, f"categorical choices take no {', '.join(extra)}")
        if spec.get("type", "categorical") != "categorical":
            fail(f"{key}.type", f"{spec['type']!r} with choices: expected categorical (or leave type out)")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            fail(f"{key}.choices", f"expected a non-empty list, got {choices!r}")
        if len({repr(c) for c in choices}) != len(choices):
            fail(f"{key}.choices", f"{choices} lists a value twice")
        for c in choices:
            if not (c is None or isinstance(c, (bool, int, float, str))):
                fail(f"{key}.choices", f"{c!r}: choices must be plain values (number, string, bool or null)")
            _check_value(name, c, f"{key}.choices", fail)
        return Parameter(name, "categorical", choices=list(choices), when=when)
    if "low" not in spec or "high" not in spec:
        fail(key, "expected a distribution (low and high, or choices) or a fixed value (value: ...)")
    hint, _ = field_type(name)   # the TrainConfig type hint, None allowed or not
    shown = next(f.type for f in fields(TrainConfig) if f.name == name)   # as written in TrainConfig
    kind = spec.get("type") or ("int" if hint is int else "float")
    if kind not in ("int", "float"):
        fail(f"{key}.type", f"{kind!r}: expected int or float (or categorical with choices)")
    if kind == "float" and hint is not float:
        fail(f"{key}.type", f"{name} is {shown}, not a float")
    if kind == "int" and hint not in (int, float):
        fail(f"{key}.type", f"{name} is {shown}, not a number")
    low, high, step, log = spec["low"], spec["high"], spec.get("step"), spec.get("log", False)
    for k, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind == "int" and not isinstance(v, int)):
            fail(f"{key}.{k}", f"{v!r}: expected {'an integer' if kind == 'int' else 'a number'}")
    if low > high:
        fail(key, f"low={low} > high={high}")
    if not isinstance(log, bool):
        fail(f"{key}.log", f"{log!r}: expected true or false")
    if log and low <= 0:
        fail(f"{key}.low", f"{low}: a log distribution needs low > 0")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step < math.inf \
                or (kind == "int" and not isinstance(step, int)):
            fail(f"{key}.step", f"{step!r}: expected a number > 0{' (an integer)' if kind == 'int' else ''}")
        if log and (kind == "float" or step != 1):
            fail(f"{key}.step", "step and log cannot be combined (Optuna allows only step 1 for log ints)")
    for k, v in (("low", low), ("high", high)):
        _check_value(name, v, f"{key}.{k}", fail)
    return Parameter(name, kind, low=low, high=high, log=log, step=step, when=when)


def _parse_when(raw: Any, key: str, fail: Fail) -> dict[str, list[Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        fail(key, f"expected a mapping parameter -> value or list of values, e.g. {{temporal: triplet}}, got {raw!r}")
    out = {}
    for name, allowed in raw.items():
        allowed = allowed if isinstance(allowed, list) else [allowed]
        if not allowed:
            fail(f"{key}.{name}", "expected a value or a non-empty list of values")
        out[str(name)] = allowed
    return out


def _check_name(name: Any, known: dict, key: str, fail: Fail) -> None:
    if name in RESERVED:
        fail(key, f"is set by the search itself (from {RESERVED[name]}); remove it from the space")
    if name not in known or name == "metadata":
        fail(key, f"unknown parameter; expected a TrainConfig key: {', '.join(k for k in known if k not in RESERVED)}")


def _check_value(name: str, value: Any, key: str, fail: Fail) -> None:
    """Reject a value TrainConfig would reject (type and range), naming the space key."""
    try:
        TrainConfig.from_dict({name: value}, source="value")
    except ConfigError as exc:
        msg = str(exc).removeprefix("value: ")
        fail(key, msg)


def _section(raw: Any, allowed, where: str, fail: Fail) -> dict:
    """`raw` as a mapping holding only `allowed` keys (absent = empty)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        fail(where, f"expected a mapping with {', '.join(allowed)}, got {raw!r}")
    _only(raw, allowed, where, fail)
    return raw


def _only(raw: dict, allowed, where: str, fail: Fail) -> None:
    for k in raw:
        if k not in allowed:
            fail(f"{where.split()[0]}.{k}", f"unknown key; expected one of {', '.join(allowed)}")


def _int(value: Any, key: str, fail, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum \
            or (maximum is not None and value > maximum):
        fail(key, f"{value!r}: expected an integer >= {minimum}" + (f" and <= {maximum}" if maximum else ""))
    return value
