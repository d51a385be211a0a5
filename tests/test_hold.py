"""tuner.search.hold, the test-only pause the bucket life-cycle test kills the driver at: off without its variables,
the trials numbered in the order they start, the held one waiting for the release file."""
from __future__ import annotations

import threading
import time

from tuner.search.hold import HOLD, RELEASE, WHERE, hold_after, hold_epoch


def test_off_unless_both_variables_are_set(tmp_path, monkeypatch):
    monkeypatch.delenv(RELEASE, raising=False)
    monkeypatch.setenv(HOLD, "1:2")
    assert hold_epoch() is None
    assert not list(tmp_path.iterdir())


def test_trials_numbered_as_they_start_and_the_held_one_waits_for_the_release(tmp_path, monkeypatch):
    release = tmp_path / "release"
    monkeypatch.setenv(HOLD, "2:3,3:1")
    monkeypatch.setenv(RELEASE, str(release))
    assert [hold_epoch() for _ in range(4)] == [None, 3, 1, None]

    hold_after(2, 3)   # not its epoch: returns at once
    waiter = threading.Thread(target=hold_after, args=(3, 3))
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive()
    release.touch()
    waiter.join(timeout=5)
    assert not waiter.is_alive()


def test_only_the_trials_where_the_config_says_are_numbered_and_held(tmp_path, monkeypatch):
    monkeypatch.setenv(HOLD, "2:1")
    monkeypatch.setenv(RELEASE, str(tmp_path / "release"))
    monkeypatch.setenv(WHERE, "labeled_ratio=1.0")
    configs = [{"labeled_ratio": 0.5}, {"labeled_ratio": 1.0}, {"lr_adam": 0.1}, {"labeled_ratio": 1.0}]
    assert [hold_epoch(c) for c in configs] == [None, None, None, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release.started-1", "release.started-2"]
