"""model.atomic_files (atomic_write, replace_dir, output checks) and model.locks, interrupted cases included."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from model.atomic_files import atomic_write, check_output_dir, check_output_file, replace_dir
from model.errors import UserError
from model.locks import LockHeld, lock_path, writer_lock

REPO = Path(__file__).resolve().parents[1]


def _child(code: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)


def test_atomic_write_bytes_text_and_writer(tmp_path):
    atomic_write(tmp_path / "a" / "b.txt", "héllo")
    atomic_write(tmp_path / "c.bin", b"\x00\x01")
    atomic_write(tmp_path / "d.bin", lambda f: f.write(b"xyz"))
    assert (tmp_path / "a" / "b.txt").read_text() == "héllo"
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "d.bin").read_bytes() == b"xyz"
    assert (tmp_path / "c.bin").stat().st_mode & 0o644 == 0o644   # not mkstemp's private 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c.bin", "d.bin"]


def test_atomic_write_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "model.pt"
    target.write_text("old")

    def fails(f):
        f.write(b"half of the new content")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, fails)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_atomic_write_killed_mid_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "status.json"
    target.write_text('{"state": "old"}')
    child = _child(f"""
import sys, time
from model.atomic_files import atomic_write
def slow(f):
    f.write(b'{{"state": "ne')
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
atomic_write({str(target)!r}, slow)
""")
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert json.loads(target.read_text()) == {"state": "old"}
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "status.json"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".status.json.")   # a hidden temp, never the target


def test_replace_dir_replaces_and_keeps_the_old_until_the_new_is_in(tmp_path, monkeypatch):
    target, new = tmp_path / "store", tmp_path / ".store.tmp"
    target.mkdir()
    (target / "frames.npy").write_text("old")
    new.mkdir()
    (new / "frames.npy").write_text("new")
    replace_dir(new, target)
    assert (target / "frames.npy").read_text() == "new" and not new.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["store"]   # the old one is gone

    # a crash between the two renames: the old folder survives at `old`, the new one at tmp
    new.mkdir()
    (new / "frames.npy").write_text("newer")
    calls = []
    real_rename = os.rename

    def crash_on_second(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        replace_dir(new, target, old=tmp_path / "store.old")
    monkeypatch.setattr(os, "rename", real_rename)
    assert (tmp_path / "store.old" / "frames.npy").read_text() == "new"
    assert (new / "frames.npy").read_text() == "newer" and not target.exists()


def test_replace_dir_without_overwrite_refuses_a_non_empty_target(tmp_path):
    target, new = tmp_path / "corpus", tmp_path / ".corpus.tmp"
    target.mkdir()
    new.mkdir()
    (new / "x").write_text("1")
    replace_dir(new, target, overwrite=False)      # an empty target is replaced
    assert (target / "x").read_text() == "1"
    new.mkdir()
    with pytest.raises(OSError):
        replace_dir(new, target, overwrite=False)
    assert (target / "x").read_text() == "1"


def test_output_checks(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    check_output_file(tmp_path / "new" / "deeper" / "p.csv")
    check_output_dir(tmp_path / "dir")
    with pytest.raises(UserError, match=r"--out .*dir: is a folder"):
        check_output_file(tmp_path / "dir")
    with pytest.raises(UserError, match=r"file: is a file"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(UserError, match=r"file is a file, not a folder"):
        check_output_file(tmp_path / "file" / "p.csv")
    with pytest.raises(UserError, match=r"file is a file, not a folder"):
        check_output_dir(tmp_path / "file" / "sub" / "run")
    if os.geteuid() != 0:   # root may write anywhere
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        with pytest.raises(UserError, match="not writable"):
            check_output_file(locked / "p.csv")


def test_writer_lock_refuses_a_second_writer_and_names_the_holder(tmp_path):
    target = tmp_path / "run"
    with writer_lock(target, "run folder") as previous:
        assert previous == {}
        holder = json.loads(lock_path(target).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] and holder["started"]
        child = _child(f"""
from model.locks import writer_lock
try:
    with writer_lock({str(target)!r}, "run folder"):
        print("acquired")
except Exception as exc:
    print(type(exc).__name__, exc)
""")
        out = child.communicate(timeout=60)[0]
        assert out.startswith("LockHeld") and f"pid {os.getpid()}" in out and "host " in out, out
    assert not lock_path(target).exists()   # released and removed
    with writer_lock(target, "run folder"):
        with pytest.raises(LockHeld):
            with writer_lock(target, "run folder"):
                pass


def test_writer_lock_of_a_killed_process_is_taken_over(tmp_path):
    target = tmp_path / "store"
    child = _child(f"""
import time
from model.locks import writer_lock
with writer_lock({str(target)!r}, "store"):
    print("held", flush=True)
    time.sleep(60)
""")
    assert child.stdout.readline().strip() == "held"
    with pytest.raises(LockHeld, match=f"pid {child.pid}"):
        with writer_lock(target, "store"):
            pass
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert lock_path(target).exists()    # the dead process left its lock file behind
    with writer_lock(target, "store") as previous:
        assert previous["pid"] == child.pid


def test_run_lock_local_and_bucket(tmp_path):
    from tuner.runs.run_dir import RunDir

    run = RunDir(tmp_path / "results", "r1")
    with run.sole_driver():
        with pytest.raises(LockHeld, match=rf"search run 'r1' is in use .*pid {os.getpid()}"):
            with RunDir(tmp_path / "results", "r1").sole_driver():
                pass
    with RunDir(f"file://{tmp_path}/results", "r1").sole_driver():   # file:// is the same local lock
        with pytest.raises(LockHeld):
            with run.sole_driver():
                pass

    bucket = RunDir("mock:///bucket/results", "r2")   # pyarrow's in-memory filesystem: no file locks
    lock = "bucket/results/.r2.lock"
    with bucket.sole_driver():
        assert json.loads(bucket.fs.open_input_stream(lock).read())["pid"] == os.getpid()
        with pytest.raises(LockHeld, match="delete mock:///bucket/results/.r2.lock"):
            with bucket.sole_driver():
                pass
    assert bucket._remote_holder() is None     # released
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket
    with bucket.fs.open_output_stream(lock) as f:   # left by a killed driver of this host
        f.write(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "started": "x"}).encode())
    with bucket.sole_driver():
        assert bucket._remote_holder()["pid"] == os.getpid()
