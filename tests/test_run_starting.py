"""Issue 21 §12: a run that is starting (its driver holds the run's lock, run.json is not written yet: Ray is
still starting) is named by every command that opens the run, not called missing. The starting driver is a
process that holds the lock as `run` does (no Ray needed)."""
from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys

import pytest

from model.errors import UserError
from model.locks import LockHeld
from tune_helpers import REPO
from tuner.runs.run_dir import RunDir

COMMANDS = [["resume"], ["confirm"], ["report"], ["status"], ["export"], ["dashboard"], ["tensorboard"]]


@pytest.fixture
def starting(tmp_path):
    """A process holding run `demo`'s lock under tmp_path/results before its run.json exists."""
    code = ("import time\nfrom tuner.runs.run_dir import RunDir\n"
            f"with RunDir({str(tmp_path / 'results')!r}, 'demo').sole_driver():\n"
            "    print('held', flush=True)\n    time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_starting_run_is_named_with_its_driver(command, starting, tmp_path, capsys):
    from tuner.cli import main

    assert main([*command, "demo", "--storage", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(re.escape(f"error: {tmp_path / 'results' / 'demo'}: search run 'demo' is being started by "
                                  f"another process (host {socket.gethostname()}, pid {starting.pid}, started ")
                        + r"[-0-9T:+]+" + re.escape(") and has no run.json yet; try again once it has started\n"),
                        err), err
    assert not (tmp_path / "results" / "demo").exists()   # a reading command created nothing


def test_the_lock_of_a_driver_that_died_is_not_a_starting_run(starting, tmp_path):
    run = RunDir(tmp_path / "results", "demo")
    starting.send_signal(signal.SIGKILL)
    starting.wait()
    assert (tmp_path / "results" / ".demo.lock").exists()   # left behind by the killed driver
    assert run.lock_holder() is None
    with pytest.raises(UserError, match="no search run here") as caught:
        run.read_manifest()
    assert not isinstance(caught.value, LockHeld)
    with run.sole_driver():   # looking did not keep it: a new driver takes it over
        pass


def test_a_starting_bucket_run_is_named_with_its_driver(tmp_path):
    """The bucket branch (a lock object, no file locks), through a file:// URI."""
    run = RunDir(f"file://{tmp_path}/results", "demo")
    run.local = None
    lock = tmp_path / "results" / ".demo.lock"
    lock.parent.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": sleeper.pid, "started": "T"}))
        with pytest.raises(LockHeld, match=rf"being started by another process \(host .*, pid {sleeper.pid}, "
                                           r"started T\) and has no run.json yet"):
            run.read_manifest()
    finally:
        sleeper.kill()
        sleeper.wait()
    with pytest.raises(UserError, match="no search run here"):   # its holder is gone
        run.read_manifest()
