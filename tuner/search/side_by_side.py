"""The conditions' studies at the same time: one Tuner.fit() per condition, each in a thread of the driver.

Each condition keeps its own Tuner: its own Optuna study, scheduler, results folder and Ray experiment
state (so `resume` restores each one as before). What they share is the run's limits:
- trials' resources (CPUs, GPU slices) come from the one Ray cluster, so Ray's scheduler shares them;
- `max_concurrent_trials` is run-wide: every condition's searcher is wrapped in
  tuner.search.run_limiter.RunWideLimiter.
Ctrl+C or SIGTERM stops every study the way it stops one (Ray saves its state, trials stay resumable): the
studies' Tune loops share one stop event (tuner.search.stop_signals.tune_stop), which a failing study also sets to
stop the others, and Ray's trainable registry (which each Tuner.fit writes to, without a lock) is serialised.
The registry keeps one trainable per name, so each condition's is named after it
(tuner.search.experiment.make_trainable).
"""
from __future__ import annotations

import threading
from typing import Any, Callable


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
