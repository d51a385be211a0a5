"""A run started before tuner/ moved into packages resumes after it: Ray's pickles of that run name the old
modules (tests/data/pre_move_pickles: RUN/<condition>/tuner.pkl and the searcher's state file of a
condition of tests/data/fixed_run, written by the code before the move), and they load into the moved
classes; every old module name leads to the same objects as the new one."""
from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import tuner

PICKLES = Path(__file__).resolve().parent / "data" / "pre_move_pickles"


def test_pre_move_tuner_state_loads_into_the_moved_classes(monkeypatch):
    from tuner.runs.result_log import ResultJsonLogger
    from tuner.runs.tensorboard_log import TensorBoardCallback
    from tuner.search.experiment import trial_dirname
    from tuner.search.scheduler_state import ResumableASHA
    from tuner.search.run_limiter import RunWideLimiter
    from tuner.search.study_searcher import StudySearcher

    # the searcher re-opens its study when unpickled; that study lived in the run storage of the machine that
    # wrote the pickle (an absolute path), so here only the class lookup by the old module names is tested
    monkeypatch.setattr(StudySearcher, "__setstate__", lambda self, state: self.__dict__.update(state))
    state = pickle.loads((PICKLES / "tuner.pkl").read_bytes())
    config = state["_tune_config"]
    assert type(config.search_alg) is RunWideLimiter and type(config.search_alg.searcher) is StudySearcher
    assert type(config.scheduler) is ResumableASHA
    assert config.trial_dirname_creator is trial_dirname
    kinds = {type(c) for c in state["_run_config"].callbacks}
    assert {ResultJsonLogger, TensorBoardCallback} <= kinds


def test_pre_move_searcher_state_loads_into_the_moved_sampler():
    from tuner.space.schema import SpaceSampler

    state = pickle.loads((PICKLES / "searcher-state.pkl").read_bytes())
    assert type(state["_space"]) is SpaceSampler


def test_a_sampler_pickled_before_the_space_schema_module_loads():
    """SpaceSampler lived in tuner/search_space.py before tuner/space_schema.py: a searcher pickled then names
    it there (pickle's GLOBAL opcode, as in such a file)."""
    from tuner.space.schema import SpaceSampler, condition_label

    assert pickle.loads(b"ctuner.search_space\nSpaceSampler\n.") is SpaceSampler
    assert pickle.loads(b"ctuner.search_space\ncondition_label\n.") is condition_label


def test_every_old_module_name_leads_to_the_new_module():
    for old, new in tuner.MOVED.items():
        stub = importlib.import_module(old)
        for target in (new,) if isinstance(new, str) else new:
            moved = importlib.import_module(target)
            public = [name for name, value in vars(moved).items()
                      if not name.startswith("_") and getattr(value, "__module__", None) == target]
            assert public, target
            assert all(getattr(stub, name) is getattr(moved, name) for name in public), old
