"""The conditions' studies at the same time: one Tuner.fit() per condition, each in a thread of the driver.

Each condition keeps its own Tuner: its own Optuna study, scheduler, results folder and Ray experiment
state (so `resume` restores each one as before). What they share is the run's limits:
- trials' resources (CPUs, GPU slices) come from the one Ray cluster, so Ray's scheduler shares them;
- `max_concurrent_trials` is run-wide: every condition's searcher is wrapped in `RunWideLimiter`,
  which takes a slot from the run's `RunSlots` (a lock and a set of live trials, one per run in this
  process) before it suggests a trial and gives it back when the trial completes. Slots are shared
  fairly: a free slot goes to the asking condition holding the fewest slots (then the one waiting
  longest), so the studies advance together and none waits for another to finish. Ray's own
  ConcurrencyLimiter is per Tuner, so TuneConfig.max_concurrent_trials is left unset.
Ctrl+C or SIGTERM stops every study the way it stops one (Ray saves its state, trials stay resumable): the
studies' Tune loops share one stop event (tuner.search.stop_signals.tune_stop), which a failing study also sets to
stop the others, and Ray's trainable registry (which each Tuner.fit writes to, without a lock) is serialised.
The registry keeps one trainable per name, so each condition's is named after it
(tuner.search.experiment.make_trainable).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from ray.tune.search import Searcher
from ray.tune.search.util import _set_search_properties_backwards_compatible

STALE_S = 10.0   # a condition that has not asked for this long (its study ended) is no longer waiting
_SLOTS: dict[str, "RunSlots"] = {}
_SLOTS_LOCK = threading.Lock()


class RunSlots:
    """The live trials of a whole run (all conditions) against its max_concurrent_trials."""

    def __init__(self, limit: int):
        self.limit = limit
        self.lock = threading.Lock()
        self.live: set[tuple[str, str]] = set()   # (condition label, trial id)
        self.waiting: dict[str, tuple[float, float]] = {}   # label -> (refused since, last asked)

    def may_take(self, label: str) -> bool:
        """A free slot, and this condition is next in turn: of the conditions asking (in the last
        STALE_S seconds), the one holding the fewest slots, then the one waiting longest."""
        if len(self.live) >= self.limit:
            return False
        now = time.monotonic()
        asking = {lab: since for lab, (since, last) in self.waiting.items() if now - last < STALE_S}
        asking.setdefault(label, now)
        held = {lab: sum(1 for owner, _ in self.live if owner == lab) for lab in asking}
        return min(asking, key=lambda lab: (held[lab], asking[lab])) == label

    def refused(self, label: str) -> None:
        since = self.waiting.get(label, (time.monotonic(), 0.0))[0]
        self.waiting[label] = (since, time.monotonic())


def run_slots(key: str, limit: int) -> RunSlots:
    """The run's shared slots (created on first use; one per run URI in this process)."""
    with _SLOTS_LOCK:
        if key not in _SLOTS:
            _SLOTS[key] = RunSlots(limit)
        return _SLOTS[key]


class RunWideLimiter(Searcher):
    """Wraps a condition's searcher: suggests only while the run has fewer live trials than its limit."""

    def __init__(self, searcher: Searcher, run_key: str, label: str, limit: int):
        self.searcher, self._run_key, self._label, self._limit = searcher, run_key, label, limit
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    @property
    def slots(self) -> RunSlots:
        return run_slots(self._run_key, self._limit)   # looked up, never pickled (it holds a lock)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return _set_search_properties_backwards_compatible(self.searcher.set_search_properties, metric, mode,
                                                           config, **spec)

    def suggest(self, trial_id: str) -> dict | None:
        slots = self.slots
        with slots.lock:
            if not slots.may_take(self._label):
                slots.refused(self._label)
                return None   # Ray asks again later
            config = self.searcher.suggest(trial_id)
            if config not in (None, Searcher.FINISHED):
                slots.live.add((self._label, trial_id))
            slots.waiting.pop(self._label, None)   # it got a trial, or it has none left to start
            return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        slots = self.slots
        with slots.lock:   # another study's thread may be counting `live` in may_take
            slots.live.add((self._label, trial_id))   # a restored trial holds its slot (also added at resume)
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        slots = self.slots
        with slots.lock:
            slots.live.discard((self._label, trial_id))
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def get_state(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "searcher"}

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


def run_in_threads(jobs: dict[str, Callable[[], Any]], stop: threading.Event) -> dict[str, Any]:
    """Run each job (a condition's study) in its own thread; `stop` (watched by every study's Tune loop) is
    set when one job fails, so that the others stop too (resumable).

    Returns label -> the job's return value; the first exception of a job is raised after all ended."""
    import ray.tune.registry as registry_module

    registry = registry_module._global_registry   # Tuner.fit registers its trainable: not thread-safe in Ray
    register, register_lock = registry.register, threading.Lock()

    def locked_register(*args, **kwargs):
        with register_lock:
            return register(*args, **kwargs)

    registry.register = locked_register
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def work(label: str, job: Callable[[], Any]) -> None:
        try:
            results[label] = job()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)
            stop.set()   # one study failed: stop the others (resumable)

    threads = [threading.Thread(target=work, args=item, name=f"study-{item[0]}") for item in jobs.items()]
    try:
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.5)   # the signal handler (tuner.search.stop_signals) runs in this thread
    finally:
        del registry.register   # the class's own method again
    if errors:
        raise errors[0]
    return results
