"""The feature store through real object-store servers on loopback (S3: moto, GCS: an emulator):
upload with `sync-store --upload`, the verified per-node copy, a corrupt or partial upload refused,
and an unreachable endpoint or refused credentials reported as one `error:` line (exit 2), fast."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tune_helpers import REPO, tuner_env
from tuner.storage.store_sync import MANIFEST, STORE_FILES


def cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuner", *args], cwd=cwd, env=tuner_env(str(cwd)),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(params=["s3", "gcs"])
def server(request):
    return request.getfixturevalue(f"{request.param}_server")


def test_upload_then_copy_down_identical_then_corruption_refused(server, tiny_store, tmp_path):
    prefix = f"stores/{uuid.uuid4().hex[:8]}/tiny.store"
    uri = server.uri(prefix)
    up = cli(["sync-store", str(tiny_store), "--upload", uri], tmp_path)
    assert up.returncode == 0, up.stderr
    assert set(server.files(prefix)) == {*STORE_FILES, MANIFEST}

    down = cli(["sync-store", uri, "--cache", str(tmp_path / "cache1")], tmp_path)
    assert down.returncode == 0, down.stderr
    local = Path(down.stdout.strip().splitlines()[-1])
    assert local.parent == tmp_path / "cache1" and local.name.startswith("tiny.store-")  # the query is not in it
    for name in STORE_FILES:
        assert (local / name).read_bytes() == (tiny_store / name).read_bytes(), name

    # one byte of frames.npy changed in the bucket, same size: the manifest's sha256 catches it
    frames = bytearray(server.read(f"{prefix}/frames.npy"))
    frames[-1] ^= 0xFF
    server.write(f"{prefix}/frames.npy", bytes(frames))
    bad = cli(["sync-store", uri, "--cache", str(tmp_path / "cache2")], tmp_path)
    assert bad.returncode == 2, bad.stderr
    assert "frames.npy does not match sync_manifest.json" in bad.stderr and "Traceback" not in bad.stderr
    assert not [p for p in (tmp_path / "cache2").iterdir() if not p.name.endswith(".lock")]  # nothing half-copied

    # a partial upload (index.npy never arrived) is refused before anything is copied
    server.filesystem().delete_file(f"{server.bucket}/{prefix}/index.npy")
    partial = cli(["sync-store", uri, "--cache", str(tmp_path / "cache3")], tmp_path)
    assert partial.returncode == 2 and "missing index.npy" in partial.stderr, partial.stderr


def test_truncated_object_is_refused_by_size(s3_server, tiny_store, tmp_path):
    """An object cut short in the bucket (a killed `aws s3 cp`): the manifest's size catches it."""
    from model.errors import StoreError
    from tuner.storage.store_sync import ensure_local_store, upload_store

    prefix = f"stores/{uuid.uuid4().hex[:8]}/tiny.store"
    upload_store(tiny_store, s3_server.uri(prefix))
    s3_server.write(f"{prefix}/index.npy", s3_server.read(f"{prefix}/index.npy")[:-10])
    with pytest.raises(StoreError, match=r"index\.npy does not match sync_manifest\.json"):
        ensure_local_store(s3_server.uri(prefix), tmp_path / "cache")


def closed_port_uri(path: str) -> str:
    from bucket_servers import HOST
    from tune_helpers import free_port

    return f"s3://tuner-test/{path}?endpoint_override={HOST}:{free_port(HOST)}&scheme=http&region=us-east-1"


def cli_all(commands: list[list[str]], cwd: Path, timeout: float = 120) -> list[tuple[subprocess.CompletedProcess, float]]:
    """Run several CLI commands at once (each one mostly waits on the network); (result, seconds) each."""
    procs = []
    for i, args in enumerate(commands):
        work = cwd / f"cmd{i}"
        work.mkdir()
        procs.append((subprocess.Popen([sys.executable, "-m", "tuner", *args], cwd=work, env=tuner_env(str(work)),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                      time.monotonic(), args))
    results = []
    for proc, start, args in procs:
        out, err = proc.communicate(timeout=timeout)
        results.append((subprocess.CompletedProcess(args, proc.returncode, out, err), time.monotonic() - start))
    return results


def test_unreachable_endpoint_is_one_error_line_before_ray(s3_server, tiny_store, tmp_path):
    """A wrong endpoint in --storage or --store (run) and in status: exit 2, one line naming the URI, no Ray."""
    smoke = str(REPO / "search_spaces" / "smoke.yaml")
    good_prefix = f"results-{uuid.uuid4().hex[:8]}"
    good = s3_server.uri(good_prefix)
    commands = [["run", "--space", smoke, "--store", str(tiny_store), "--storage", closed_port_uri("results")],
                ["run", "--space", smoke, "--store", closed_port_uri("stores/x.store"), "--storage", good],
                ["status", "x", "--storage", closed_port_uri("results")]]
    for i, (proc, took) in enumerate(cli_all(commands, tmp_path)):
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert "s3://tuner-test/" in lines[0] and "127.0.0.1" in lines[0], lines[0]
        assert "cannot use the storage" in lines[0] and "endpoint" in lines[0], lines[0]
        assert took < 60, took                                   # pyarrow's retries, then the answer: no hang
        assert not list((tmp_path / f"cmd{i}").glob("session_*"))  # Ray never started (RAY_TMPDIR is the cwd)
    assert s3_server.files(good_prefix) == {}  # the run refused for its store wrote nothing in its storage


def test_refused_credentials_are_one_error_line(tmp_path, bucket_env, tiny_store):
    """A server that checks credentials refuses the dummy ones: exit 2 naming the URI, for run and upload."""
    from bucket_servers import ObjectServer

    server = ObjectServer("s3", tmp_path, auth=True)
    try:
        commands = [["run", "--store", str(tiny_store), "--storage", server.uri("results"),
                     "--space", str(REPO / "search_spaces" / "smoke.yaml")],
                    ["sync-store", str(tiny_store), "--upload", server.uri("stores/x.store")]]
        for i, (proc, _) in enumerate(cli_all(commands, tmp_path)):
            assert proc.returncode == 2, proc.stderr
            assert proc.stderr.startswith("error: ") and "s3://tuner-test/" in proc.stderr, proc.stderr
            assert "ACCESS_DENIED" in proc.stderr and "credentials" in proc.stderr, proc.stderr
            assert "Traceback" not in proc.stderr and not list((tmp_path / f"cmd{i}").glob("session_*"))
    finally:
        server.stop()


def test_run_folder_in_the_bucket(server, tmp_path):
    """The run folder's own files (manifest, listing, walk, probe) through each server; the query stays last."""
    from tuner.runs.run_dir import RunDir, open_run

    prefix = f"runs-{uuid.uuid4().hex[:8]}"
    run = RunDir(server.uri(prefix), "r1")
    assert run.uri == server.uri(f"{prefix}/r1") and run.local is None
    run.check_writable()
    assert server.files(f"{prefix}/r1") == {}  # the probe object is gone again
    run.write_manifest({"name": "r1", "metrics": ["val_ccc_mean"], "modes": ["max"], "conditions": []})
    run.write_text("x", "cond=1", "trial_a", "result.json")
    assert open_run("r1", server.uri(prefix)).read_manifest()["name"] == "r1"
    assert run.listdir() == ["cond=1", "run.json"]
    assert [p for p, _ in run.walk()] == ["cond=1/trial_a/result.json", "run.json"]
    assert set(server.files(f"{prefix}/r1")) == {"run.json", "cond=1/trial_a/result.json"}  # no temporary left
