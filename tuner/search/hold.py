"""A test-only pause of chosen trials after a chosen epoch, so that a test can kill the driver at a
known point of a search (tests/test_bucket_search.py, tests/test_tune_resume.py,
tests/test_side_by_side_resume.py). Off unless both of the first two variables are set:

- `DEEPEMOCLUSTER_TEST_HOLD`: `<n>:<epoch>[,...]`, e.g. `2:2,3:6`: the n-th trial to start (counted by the
  trials of this machine, from 1) holds after that epoch;
- `DEEPEMOCLUSTER_TEST_RELEASE`: a file; a held trial continues once it exists. The trials claim their
  numbers with files next to it (`<release>.started-<n>`);
- `DEEPEMOCLUSTER_TEST_HOLD_WHERE` (optional): `<key>=<value>`, e.g. `labeled_ratio=1.0`: only the trials whose
  config has that value are numbered and held (one condition's trials, in a run of several side by side).

A trial holds after its epoch's checkpoint is uploaded and its report returned, that is after the
driver took the report in. Nothing in a normal run sets them.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

HOLD = "DEEPEMOCLUSTER_TEST_HOLD"
RELEASE = "DEEPEMOCLUSTER_TEST_RELEASE"
WHERE = "DEEPEMOCLUSTER_TEST_HOLD_WHERE"


def held_epoch(number: int, setting: str) -> int | None:
    """The epoch after which the `number`-th trial to start holds under `setting` (None: it does not)."""
    for item in filter(None, setting.split(",")):
        n, _, epoch = item.partition(":")
        if int(n) == number:
            return int(epoch)
    return None


def claim_number(release: Path) -> int:
    """This trial's place in the order the trials started: the first `<release>.started-<n>` it creates."""
    number = 1
    while True:
        try:
            os.close(os.open(f"{release}.started-{number}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return number
        except FileExistsError:
            number += 1


def selected(config: dict[str, Any], where: str) -> bool:
    """Whether a trial of `config` is one the holds count under `where` (`<key>=<value>`; empty: every trial)."""
    key, _, value = where.partition("=")
    return not where or (key in config and str(config[key]) == value)


def hold_epoch(config: dict[str, Any] | None = None) -> int | None:
    """At a trial's start: the epoch after which the trial of `config` holds (None: it never does)."""
    setting, release = os.environ.get(HOLD), os.environ.get(RELEASE)
    if not setting or not release or not selected(config or {}, os.environ.get(WHERE, "")):
        return None
    return held_epoch(claim_number(Path(release)), setting)


def hold_after(epoch: int, held: int | None) -> None:
    """Wait until the release file exists when `epoch` is the epoch this trial holds after."""
    if held is None or epoch != held:
        return
    release = Path(os.environ[RELEASE])
    while not release.exists():
        time.sleep(0.1)
