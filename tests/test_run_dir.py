"""tuner.runs.run_dir.RunDir on remote storage, through a file:// URI (pyarrow's filesystem branch, no server)."""
from __future__ import annotations

import json
import os
import socket

import pytest

from model.errors import UserError
from model.locks import LockHeld
from tuner.runs.run_dir import MANIFEST, RunDir, open_run


def test_file_uri_run_folder_goes_through_the_remote_filesystem(tmp_path):
    run = RunDir(f"file://{tmp_path}/results", "r1")
    assert run.fs is not None and run.uri == f"file://{tmp_path}/results/r1" and run.local == tmp_path / "results" / "r1"
    assert not run.exists(MANIFEST) and run.listdir() == [] and run.listdir("nothing") == []
    with pytest.raises(UserError, match="no search run here"):
        run.read_manifest()
    run.check_writable()   # a probe object written and deleted
    assert run.listdir() == []

    run.write_manifest({"name": "r1", "metrics": ["val_ccc_mean"], "modes": ["max"], "conditions": [{"label": "a", "values": {}, "state": "pending"}]})
    run.write_text("hello", "a", "note.txt")
    run.write_bytes(b"\x00\x01", "a", "b", "data.bin")
    assert run.listdir() == ["a", MANIFEST] and run.listdir("a") == ["b", "note.txt"]
    assert run.read_text("a", "note.txt") == "hello" and run.read_bytes("a", "b", "data.bin") == b"\x00\x01"
    assert json.loads((tmp_path / "results" / "r1" / MANIFEST).read_text())["name"] == "r1"   # real files
    assert run.set_condition_state("a", "done")["conditions"][0]["state"] == "done"
    assert open_run("r1", f"file://{tmp_path}/results").read_manifest()["conditions"][0]["state"] == "done"
    run.write_text("again", "a", "note.txt")   # replaced, no temporary object left beside it
    assert run.read_text("a", "note.txt") == "again" and run.listdir("a") == ["b", "note.txt"]
    assert run.child_uri("a", "note.txt") == f"file://{tmp_path}/results/r1/a/note.txt"

    (tmp_path / "results" / "r1" / MANIFEST).write_text("{broken")
    with pytest.raises(UserError, match="damaged manifest"):
        run.read_manifest()


def test_bucket_lock_object_through_a_file_uri(tmp_path):
    """The lock object a bucket run uses (no file locks there), exercised on file:// storage."""
    run = RunDir(f"file://{tmp_path}/results", "r2")
    run.local = None   # take the bucket branch of sole_driver
    lock = tmp_path / "results" / ".r2.lock"
    with run.sole_driver():
        holder = json.loads(lock.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(LockHeld, match=r"in use by another process .*\.r2\.lock"):
            with run.sole_driver():
                pass
    assert not lock.exists()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 12345, "started": "x"}))
    with run.sole_driver():   # a holder of this host that is gone is taken over
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()
