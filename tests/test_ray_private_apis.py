"""The private Ray Tune names the tuner relies on (docs/resume.md, "Private Ray APIs") still exist with
the shape it uses. A Ray upgrade that removes or reshapes one fails here, naming it, the module that
uses it and why, instead of failing somewhere inside a search."""
from __future__ import annotations

import inspect

import pytest
import ray


def _need(ok: bool, name: str, user: str, why: str) -> None:
    assert ok, (f"Ray {ray.__version__} no longer has {name} as the tuner uses it ({user}: {why}); "
                f"see docs/resume.md, 'Private Ray APIs', and adapt {user} before upgrading Ray")


def test_signal_catching_hook():
    from ray.tune import tune as tune_module

    hook = getattr(tune_module, "_setup_signal_catching", None)
    _need(callable(hook) and not inspect.signature(hook).parameters, "ray.tune.tune._setup_signal_catching()",
          "tuner/search/stop_signals.py", "every study's Tune loop watches one stop event that Ctrl+C and SIGTERM set (Ray "
          "catches SIGINT only in the main thread, and never SIGTERM)")
    source = inspect.getsource(tune_module.run)
    _need("_setup_signal_catching()" in source, "tune.run calling _setup_signal_catching()",
          "tuner/search/stop_signals.py", "the replaced hook must be what tune.run reads its stop event from")


def test_sigterm_handler_switch():
    import ray._private.utils as ray_utils

    _need(callable(getattr(ray_utils, "set_sigterm_handler", None)), "ray._private.utils.set_sigterm_handler",
          "tuner/search/stop_signals.py", "ray.init's SIGTERM handlers (which kill Ray's processes mid-step) are held off "
          "while Ray starts, so that SIGTERM stays a clean stop")


def test_global_trainable_registry():
    from ray.tune import registry

    reg = getattr(registry, "_global_registry", None)
    _need(reg is not None and callable(getattr(reg, "register", None)), "ray.tune.registry._global_registry.register",
          "tuner/search/side_by_side.py", "Tuner.fit registers the trainable without a lock; the conditions' threads "
          "serialise it")


def test_search_properties_helper():
    from ray.tune.search import util

    _need(callable(getattr(util, "_set_search_properties_backwards_compatible", None)),
          "ray.tune.search.util._set_search_properties_backwards_compatible", "tuner/search/run_limiter.py",
          "RunWideLimiter forwards set_search_properties to the wrapped searcher as Ray's own wrappers do")


def test_asha_rungs_are_readable():
    from ray.tune.schedulers import ASHAScheduler

    sched = ASHAScheduler(metric="m", mode="max", max_t=9, grace_period=1, reduction_factor=3)
    brackets = getattr(sched, "_brackets", None)
    _need(isinstance(brackets, list) and len(brackets) == 1, "AsyncHyperBandScheduler._brackets (one bracket)",
          "tuner/search/scheduler_state.py", "ResumableASHA refills the rungs on resume (Ray saves no scheduler state)")
    rungs = getattr(brackets[0], "_rungs", None)
    _need(isinstance(rungs, list) and all(isinstance(r, tuple) and len(r) == 2 and isinstance(r[1], dict)
                                          for r in rungs),
          "_Bracket._rungs as [(milestone, {trial_id: value})]", "tuner/search/scheduler_state.py",
          "ResumableASHA writes the restored trials' values into the rungs")
    _need([m for m, _ in rungs] == [9, 3, 1], "_Bracket._rungs milestones, highest first", "tuner/search/scheduler_state.py",
          "the rungs are matched to the epochs of the restored results")
    _need(isinstance(getattr(sched, "_trial_info", None), dict), "AsyncHyperBandScheduler._trial_info",
          "tuner/search/scheduler_state.py", "the replayed results of a restored trial go to ASHA's single bracket")


def test_json_logger_restore_hook():
    from ray.tune.logger import JsonLoggerCallback

    _need(callable(getattr(JsonLoggerCallback, "_restore_from_remote", None)),
          "JsonLoggerCallback._restore_from_remote", "tuner/runs/result_log.py",
          "a trial retried or resumed within one driver keeps the rows this driver wrote")


@pytest.mark.parametrize("attribute", ["_ot_study", "_ot_trials", "_storage", "_study_name", "_sampler",
                                       "_completed_trials"])
def test_optuna_search_attributes(attribute):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    search = OptunaSearch(space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="m", mode="max")
    present = hasattr(search, attribute) and (attribute != "_ot_study" or isinstance(search._ot_study, optuna.Study))
    _need(present, f"OptunaSearch.{attribute}", "tuner/search/study_searcher.py",
          "StudySearcher reattaches the run's durable study and its trials after a driver died")


def test_trial_checkpoint_and_storage():
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    users, why = ("tuner/runs/checkpoint_reports.py, tuner/runs/tensorboard_log.py",
                  "a restarted trial's rows and curve are made to match the checkpoint Ray restarts it from")
    _need(isinstance(vars(Trial).get("checkpoint"), property), "Trial.checkpoint (DeveloperAPI)", users, why)
    _need("self.storage" in inspect.getsource(Trial.set_storage), "Trial.storage (DeveloperAPI)", users, why)
    _need(isinstance(vars(StorageContext).get("trial_fs_path"), property)
          and "self.storage_filesystem" in inspect.getsource(StorageContext.__init__),
          "StorageContext.storage_filesystem / trial_fs_path", users, why)
