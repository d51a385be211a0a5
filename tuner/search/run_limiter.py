"""The run-wide `max_concurrent_trials` of studies side by side (tuner.search.side_by_side): every condition's
searcher is wrapped in `RunWideLimiter`, which takes a slot from the run's `RunSlots` (a lock and a set of
live trials, one per run in this process) before it suggests a trial and gives it back when the trial
completes. Slots are shared fairly: a free slot goes to the asking condition holding the fewest slots (then
the one waiting longest), so the studies advance together and none waits for another to finish. Ray's own
ConcurrencyLimiter is per Tuner, so TuneConfig.max_concurrent_trials is left unset.
"""
from __future__ import annotations

import threading
import time

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
