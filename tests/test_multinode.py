"""A real multi-node Ray cluster on this machine: a head and worker nodes on loopback, token auth on.

Every node is a `ray start --block` process on 127.0.0.2 in its own process group, with
RAY_AUTH_MODE=token and its own token file (RAY_AUTH_TOKEN_PATH, so ~/.ray/auth_token is left
alone). Teardown ends exactly the processes this fixture started, by id (no `ray stop`, which would
stop every Ray on the machine). Drivers run in subprocesses with the same environment.

The first tests run a trivial checkpointing function through Ray Tune; the last ones run the real
search (`python -m tuner run/resume --address ...` on the tiny synthetic store). Which node a trial
ran on is read from the trial's pid (in Tune's results) and the process trees of the nodes.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from malloc_probe import BLOCK_FAULTS
from tune_helpers import SMOKE, experiment_trials, free_port, trial_rows

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
HOST = "127.0.0.2"


class LoopbackCluster:
    """Head and worker nodes as `ray start --block` processes on 127.0.0.2, ended by pid."""

    def __init__(self, root: Path):
        self.root = root
        self.token_path = root / "auth_token"
        self.token_path.write_text(secrets.token_hex(32))
        self.token_path.chmod(0o600)
        self.port = free_port(HOST)
        self.address = f"{HOST}:{self.port}"
        self.nodes: dict[str, subprocess.Popen] = {}
        self.tmp_dirs: list[Path] = []

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for every node and driver: token auth, this cluster's token, the repo importable.
        Drivers get their own store and Optuna caches; each node gets its own (`node_dirs`)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path),
                   PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0",
                   DEEPEMOCLUSTER_STORE_CACHE=str(self.root / "driver" / "store-cache"),
                   DEEPEMOCLUSTER_OPTUNA_CACHE=str(self.root / "driver" / "optuna-cache"),
                   # detect a dead node within seconds, not the default tens of seconds
                   RAY_health_check_period_ms="500", RAY_health_check_timeout_ms="1000",
                   RAY_health_check_failure_threshold="3")
        env.update(extra)
        return env

    def _start(self, name: str, args: list[str], **env: str) -> None:
        # several nodes share one address: give each its own ports (some defaults are fixed numbers)
        ports = [f"--{option}={free_port(HOST)}" for option in (
            "object-manager-port", "node-manager-port", "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")]
        log = open(self.root / f"{name}.log", "w")
        self.nodes[name] = subprocess.Popen(
            [RAY, "start", "--block", "--node-ip-address", HOST, "--disable-usage-stats", *ports, *args],
            env=self.env(LOOPBACK_NODE=name, **self.node_dirs(name), **env), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)

    def node_dirs(self, name: str) -> dict[str, str]:
        """A node's own folders, as on separate machines: Ray's temp folder (short: socket paths) and
        the store cache; nothing shared with another node."""
        ray_tmp = Path(tempfile.mkdtemp(prefix=f"rt{name}", dir="/tmp"))
        self.tmp_dirs.append(ray_tmp)
        return {"RAY_TMPDIR": str(ray_tmp), "DEEPEMOCLUSTER_STORE_CACHE": str(self.cache(name))}

    def cache(self, name: str) -> Path:
        """The store cache of node `name`."""
        return self.root / name / "store-cache"

    def start_head(self, num_cpus: int = 0) -> None:
        self._start("head", ["--head", f"--port={self.port}", f"--num-cpus={num_cpus}", "--num-gpus=0",
                             f"--temp-dir={self.root / 'ray'}", "--include-dashboard=false"])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.nodes["head"].poll() is not None:
                raise RuntimeError("head exited:\n" + (self.root / "head.log").read_text())
            with socket.socket() as s:
                if s.connect_ex((HOST, self.port)) == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError("head did not open its GCS port in 120 s")

    def add_worker(self, name: str, num_cpus: int = 1) -> None:
        """Start a worker node and wait until it is up (nodes that start together race for socket names)."""
        self._start(name, [f"--address={self.address}", f"--num-cpus={num_cpus}", "--num-gpus=0"])
        log = self.root / f"{name}.log"
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            if self.nodes[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start:\n" + log.read_text())
            time.sleep(0.2)

    def kill_node(self, name: str) -> None:
        """Simulate a node failure: SIGKILL the node's processes (raylet, its workers) by pid."""
        proc = self.nodes.pop(name)
        signal_all(our_processes(proc.pid), signal.SIGKILL)
        proc.wait(timeout=30)

    def shutdown(self) -> None:
        for name in list(self.nodes)[::-1]:  # workers first, the head last
            proc = self.nodes.pop(name)
            pids = our_processes(proc.pid)
            signal_all(pids, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(alive(p) for p in pids):
                time.sleep(0.1)
                proc.poll()
            signal_all(pids, signal.SIGKILL)
            with _quiet():
                proc.wait(timeout=10)
        for folder in self.tmp_dirs:
            shutil.rmtree(folder, ignore_errors=True)


def our_processes(root: int) -> set[int]:
    """The pids this node's `ray start` (a session leader) started: its descendants and its process group."""
    parent, group = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(entry.name)], group[int(entry.name)] = int(fields[1]), int(fields[2])
    found = {root} | {pid for pid, pgrp in group.items() if pgrp == root}
    grew = True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        with _quiet():
            os.kill(pid, sig)


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        return kind is not None and issubclass(kind, (ProcessLookupError, subprocess.TimeoutExpired))


@pytest.fixture(scope="module")
def loopback_cluster(bucket_env, tmp_path_factory):
    """A head (no CPUs: trials never run there) and two 1-CPU worker nodes, `a` and `b`, each with its
    own Ray temp folder and store cache; dummy cloud credentials in their environment (bucket_env)."""
    cluster = LoopbackCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start_head(num_cpus=0)
        cluster.add_worker("a")
        cluster.add_worker("b")
        yield cluster
    finally:
        cluster.shutdown()


# A Tune search of a trivial checkpointing function; each step logs where it ran and what it resumed from.
DRIVER = textwrap.dedent("""
    import json, os, sys, tempfile, time
    import ray
    from ray import tune

    args = json.loads(sys.argv[1])
    ray.init(address=args["address"], log_to_driver=False)
    deadline = time.monotonic() + 120
    while sum(n["Alive"] for n in ray.nodes()) < args["nodes"]:
        assert time.monotonic() < deadline, "worker nodes did not join"
        time.sleep(0.2)

    def trainable(config):
        start, resumed = 0, None
        checkpoint = tune.get_checkpoint()
        if checkpoint:
            with checkpoint.as_directory() as d:
                resumed = json.load(open(os.path.join(d, "state.json")))["step"]
            start = resumed + 1
        node_id = ray.get_runtime_context().get_node_id()
        log = os.path.join(config["log_dir"], tune.get_context().get_trial_id() + ".jsonl")
        for step in range(start, config["steps"]):
            time.sleep(config["sleep"])
            with open(log, "a") as f:
                f.write(json.dumps({"step": step, "node_id": node_id, "node": os.environ.get("LOOPBACK_NODE"),
                                    "resumed_from": resumed, "x": config["x"]}) + "\\n")
            with tempfile.TemporaryDirectory() as d:
                json.dump({"step": step}, open(os.path.join(d, "state.json"), "w"))
                tune.report({"step": step}, checkpoint=tune.Checkpoint.from_directory(d))

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"x": tune.grid_search(list(range(args["trials"]))), "steps": args["steps"],
                     "sleep": args["sleep"], "log_dir": args["log_dir"]},
        run_config=tune.RunConfig(name="loopback", storage_path=args["storage"], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=3),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
    )
    results = tuner.fit()
    print(json.dumps({"errors": len(results.errors),
                      "final_steps": sorted(r.metrics["step"] for r in results)}))
""")


def start_driver(cluster: LoopbackCluster, tmp: Path, nodes: int, trials: int, steps: int,
                 sleep: float) -> tuple[subprocess.Popen, Path]:
    log_dir = tmp / "trial_logs"
    log_dir.mkdir()
    args = {"address": cluster.address, "nodes": nodes, "trials": trials, "steps": steps, "sleep": sleep,
            "log_dir": str(log_dir), "storage": str(tmp / "results")}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(args)], env=cluster.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp)
    return proc, log_dir


def finish(proc: subprocess.Popen, timeout: float = 240) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"driver timed out; stderr tail:\n{err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def read_logs(log_dir: Path) -> dict[str, list[dict]]:
    return {p.stem: [json.loads(line) for line in p.read_text().splitlines()] for p in log_dir.glob("*.jsonl")}


def test_unauthenticated_client_is_refused(loopback_cluster, tmp_path):
    """Token auth is really on: a driver with another token, or with auth off, cannot connect."""
    wrong = tmp_path / "wrong_token"
    wrong.write_text(secrets.token_hex(32))
    code = f"import ray; ray.init(address={loopback_cluster.address!r}); print(len(ray.nodes()))"
    fast = {"RAY_gcs_server_port_wait_time_s": "2"}  # give up after ~2 connection attempts, not 20
    for env in ({"RAY_AUTH_TOKEN_PATH": str(wrong)}, {"RAY_AUTH_MODE": "disabled"}):
        proc = subprocess.run([sys.executable, "-c", code], env={**loopback_cluster.env(), **fast, **env},
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0, env
        assert "token" in proc.stderr.lower() and "Failed to connect to Ray cluster" in proc.stderr, env


@pytest.mark.slow  # covered by test_search_trials_spread_over_nodes (the real search)
def test_trials_spread_over_worker_nodes(loopback_cluster, tmp_path):
    proc, log_dir = start_driver(loopback_cluster, tmp_path, nodes=3, trials=4, steps=3, sleep=0.5)
    result = finish(proc)
    assert result == {"errors": 0, "final_steps": [2, 2, 2, 2]}
    logs = read_logs(log_dir)
    assert len(logs) == 4
    node_ids = {row["node_id"] for rows in logs.values() for row in rows}
    assert len(node_ids) >= 2
    assert {row["node"] for rows in logs.values() for row in rows} <= {"a", "b"}  # never the 0-CPU head
    # checkpoints went to the shared storage path
    assert len(list((tmp_path / "results" / "loopback").glob("*/checkpoint_*"))) >= 4


@pytest.mark.slow  # covered by test_search_removed_node_trial_resumes_elsewhere (the real search)
def test_removed_node_trial_resumes_from_checkpoint_elsewhere(loopback_cluster, tmp_path):
    """Kill the worker node running the trial mid-search: it resumes on another node from its checkpoint."""
    loopback_cluster.add_worker("c")
    steps = 14
    proc, log_dir = start_driver(loopback_cluster, tmp_path, nodes=4, trials=1, steps=steps, sleep=0.5)
    deadline = time.monotonic() + 180
    victim = None
    while time.monotonic() < deadline and victim is None:
        rows = [r for rs in read_logs(log_dir).values() for r in rs]
        if len(rows) >= 3:  # a few checkpoints taken
            victim = rows[-1]["node"]
        elif proc.poll() is not None:
            break
        time.sleep(0.2)
    assert victim in {"a", "b", "c"}, proc.communicate()[1][-3000:] if proc.poll() is not None else "no progress"
    loopback_cluster.kill_node(victim)
    result = finish(proc)
    assert result == {"errors": 0, "final_steps": [steps - 1]}
    (rows,) = read_logs(log_dir).values()
    before = [r for r in rows if r["resumed_from"] is None]
    after = [r for r in rows if r["resumed_from"] is not None]
    assert before and after
    assert {r["node"] for r in before} == {victim}
    assert victim not in {r["node"] for r in after}
    resumed = after[0]["resumed_from"]
    assert resumed >= 1  # from a checkpoint, not from scratch
    assert after[0]["step"] == resumed + 1
    assert [r["step"] for r in after] == list(range(resumed + 1, steps))  # no step lost after resuming


# A driver that joins the cluster as the search does (tuner.search.experiment.start_ray) and runs one Tune
# function trial: in its thread, the allocator setting as train_trial applies it, and the page faults
# per 200 MB block allocated and freed there.
ALLOCATOR_DRIVER = BLOCK_FAULTS + textwrap.dedent("""
    import json, os, sys, threading
    from ray import tune
    from model.cpu_memory import keep_freed_blocks_in_malloc
    from tuner.search.experiment import start_ray

    start_ray(sys.argv[1])

    def trainable(config):
        keep_freed_blocks_in_malloc()
        tune.report({"node": os.environ.get("LOOPBACK_NODE"), "setting": os.environ.get("DEEPEMOCLUSTER_MALLOC"),
                     "tunables": os.environ.get("GLIBC_TUNABLES", ""), "main_thread": threading.current_thread()
                     is threading.main_thread(), "faults": block_faults()})

    results = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}),
                         run_config=tune.RunConfig(storage_path=sys.argv[2], verbose=0)).fit()
    print(json.dumps(results[0].metrics))
""")


def allocator_trial(cluster: LoopbackCluster, tmp: Path, **env: str) -> dict:
    """The metrics of ALLOCATOR_DRIVER's trial; `env`: the driver's own environment, not the nodes'."""
    proc = subprocess.run([sys.executable, "-c", ALLOCATOR_DRIVER, cluster.address, str(tmp / "results")],
                          env=cluster.env(**env), capture_output=True, text=True, cwd=tmp, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_trial_on_a_remote_worker_keeps_freed_memory(loopback_cluster, tmp_path):
    """The nodes were started without any allocator setting: the driver's job carries it to the worker
    that runs the trial, whose thread then reuses freed blocks instead of faulting them in again."""
    trial = allocator_trial(loopback_cluster, tmp_path)
    assert trial["node"] in {"a", "b"} and not trial["main_thread"]
    assert trial["setting"] == "keep" and "glibc.malloc.arena_max=1" in trial["tunables"].split(":")
    assert trial["faults"] < 2_000      # glibc's default: 48,829 per block (tests/test_cpu_memory.py)


def test_the_drivers_opt_out_reaches_a_remote_worker(loopback_cluster, tmp_path):
    trial = allocator_trial(loopback_cluster, tmp_path, DEEPEMOCLUSTER_MALLOC="system")
    assert trial["node"] in {"a", "b"}
    assert trial["setting"] == "system" and "arena_max" not in trial["tunables"]
    assert trial["faults"] > 40_000


# ---- the real search (`python -m tuner`) on the cluster ------------------------------------------

class PidTracker(threading.Thread):
    """Records which node each process belongs to while a search runs (pid -> node name)."""

    def __init__(self, cluster: LoopbackCluster):
        super().__init__(daemon=True)
        self.cluster, self.node_of, self.done = cluster, {}, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for name, proc in list(self.cluster.nodes.items()):
                for pid in our_processes(proc.pid):
                    self.node_of.setdefault(pid, name)
            time.sleep(0.2)

    def __enter__(self) -> "PidTracker":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()


def search(cluster: LoopbackCluster, args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tuner", *args, "--address", cluster.address], cwd=cwd,
                            env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_mid_trial(exp_dir: Path, proc: subprocess.Popen, epochs: int, tracker: "PidTracker") -> tuple[str, str]:
    """Wait until a trial on a worker has checkpointed >= 2 epochs and has more to go: (trial id, node)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        for trial_id, rows in trial_rows(exp_dir).items():
            node = tracker.node_of.get(rows[-1]["pid"]) if rows else None
            if 2 <= len(rows) < epochs - 2 and node not in (None, "head"):
                return trial_id, node
        time.sleep(0.2)
    raise AssertionError("no trial was caught mid-run" +
                         (proc.communicate()[1][-3000:] if proc.poll() is not None else ""))


def long_trials_space(tmp: Path, epochs: int, trials: int = 2) -> Path:
    """smoke.yaml with one condition, `trials` trials and no early stopping: trials long enough to interrupt."""
    space = yaml.safe_load(SMOKE.read_text())
    space["conditions"] = {"labeled_ratio": [1.0]}
    space["budget"] = {"num_samples": trials, "max_epochs": epochs}
    space["scheduler"] = "none"
    path = tmp / "long.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def bucket_store(server, tiny_store, prefix: str) -> str:
    """The tiny store uploaded to the S3 server under a name of its own: its URI (endpoint in the query)."""
    from tuner.storage.store_sync import upload_store

    uri = server.uri(f"stores/{prefix}.store")
    upload_store(tiny_store, uri)
    return uri


def copies(cluster: LoopbackCluster, prefix: str) -> dict[str, int]:
    """Copies of the store `bucket_store(..., prefix)` in each node's own cache: node -> number of copies."""
    return {name: len(list(cluster.cache(name).glob(f"{prefix}.store-*")))
            for name in cluster.nodes if cluster.cache(name).is_dir()}


def bucket_trial_rows(server, exp: str) -> dict[str, list[dict]]:
    """Trial id -> result rows, from the newest experiment state in the bucket under `exp`."""
    states = sorted(n for n in server.files(exp) if n.startswith("experiment_state-"))
    if not states:
        return {}
    rows = {}
    for entry in json.loads(server.read(f"{exp}/{states[-1]}"))["trial_data"]:  # read after the run: complete
        trial = json.loads(entry[0])
        try:
            text = server.read(f"{exp}/{trial['relative_logdir']}/result.json").decode()
        except (FileNotFoundError, KeyError, TypeError):
            text = ""
        rows[trial["trial_id"]] = [json.loads(line) for line in text.splitlines() if line.strip()]
    return rows


def test_search_trials_spread_over_nodes(loopback_cluster, s3_server, tiny_store, tmp_path):
    """Store and results in an S3 bucket, nodes sharing no folder: each node that runs trials copies
    the store into its own cache once, and every trial's results land in the bucket."""
    prefix = f"spread-{os.getpid()}"
    store = bucket_store(s3_server, tiny_store, prefix)
    with PidTracker(loopback_cluster) as tracker:
        proc = search(loopback_cluster, ["run", "--space", str(SMOKE), "--store", store, "--name", "spread",
                                         "--storage", s3_server.uri(f"{prefix}/results")], tmp_path)
        out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-3000:]
    nodes = set()
    for condition in ("labeled_ratio=0.5", "labeled_ratio=1.0"):
        rows = bucket_trial_rows(s3_server, f"{prefix}/results/spread/{condition}")
        assert len(rows) == 4 and all(rows.values())
        nodes |= {tracker.node_of.get(row["pid"]) for trial_rows_ in rows.values() for row in trial_rows_}
    assert len(nodes) >= 2 and nodes <= set(loopback_cluster.nodes) - {"head"}  # never the 0-CPU head
    made = copies(loopback_cluster, prefix)
    assert {n for n, k in made.items() if k} == nodes and all(made[n] == 1 for n in nodes)  # one copy per node
    assert not (tmp_path / "results").exists()


def test_search_removed_node_trial_resumes_elsewhere(loopback_cluster, s3_server, tiny_store, tmp_path):
    """Kill the node of the running trial: it continues on another node from its checkpoint in the
    bucket (that node copies the store for itself first)."""
    epochs = 8
    loopback_cluster.add_worker("d")
    prefix = f"removal-{os.getpid()}"
    store = bucket_store(s3_server, tiny_store, prefix)
    exp = f"{prefix}/results/removal/labeled_ratio=1.0"
    before = copies(loopback_cluster, prefix)
    with PidTracker(loopback_cluster) as tracker:
        proc = search(loopback_cluster, ["run", "--space", str(long_trials_space(tmp_path, epochs, trials=1)),
                                         "--store", store, "--name", "removal",
                                         "--storage", s3_server.uri(f"{prefix}/results")], tmp_path)
        # one trial: the node whose cache gained a copy runs it; kill it once >= 2 checkpoints are in the bucket
        deadline, victim = time.monotonic() + 240, None
        while victim is None and time.monotonic() < deadline and proc.poll() is None:
            gained = [n for n, k in copies(loopback_cluster, prefix).items() if k > before.get(n, 0)]
            checkpoints = {name.split("/")[1] for name in s3_server.files(exp) if "/checkpoint_" in name}
            if len(gained) == 1 and 2 <= len(checkpoints) < epochs - 2:
                victim = gained[0]
            time.sleep(0.2)
        assert victim, "no trial was caught mid-run" + (proc.communicate()[1][-3000:] if proc.poll() is not None else "")
        loopback_cluster.kill_node(victim)
        out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-3000:]
    (rows,) = bucket_trial_rows(s3_server, exp).values()
    assert [r["training_iteration"] for r in rows][-1] == epochs
    restored = [r for r in rows if r["iterations_since_restore"] < r["training_iteration"]]
    assert restored, "the trial started over instead of restoring its checkpoint"
    assert restored[0]["training_iteration"] - restored[0]["iterations_since_restore"] >= 2  # >= 2 epochs kept
    assert victim not in {tracker.node_of.get(r["pid"]) for r in restored}
    # the node that took over copied the store into its own cache (nothing is shared between nodes)
    took_over = {tracker.node_of.get(r["pid"]) for r in restored}
    assert all(copies(loopback_cluster, prefix).get(n, 0) == 1 for n in took_over)


def test_search_killed_driver_then_resume_finishes_on_the_cluster(loopback_cluster, tiny_store, tmp_path):
    """SIGKILL the search's driver mid-run; `python -m tuner resume --address` finishes it from the checkpoints."""
    epochs = 8
    storage = tmp_path / "results"
    exp_dir = storage / "killed" / "labeled_ratio=1.0"
    with PidTracker(loopback_cluster) as tracker:
        proc = search(loopback_cluster, ["run", "--space", str(long_trials_space(tmp_path, epochs)), "--store",
                                         str(tiny_store), "--name", "killed", "--storage", str(storage)], tmp_path)
        trial, _ = wait_mid_trial(exp_dir, proc, epochs, tracker)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver only: it joined the cluster, it started no Ray nodes
        proc.communicate(timeout=30)
        kept = len(trial_rows(exp_dir)[trial])
        resume = search(loopback_cluster, ["resume", "killed", "--storage", str(storage)], tmp_path)
        out, err = resume.communicate(timeout=400)
    assert resume.returncode == 0, err[-3000:]
    assert [t["status"] for t in experiment_trials(exp_dir)] == ["TERMINATED"] * 2
    rows = trial_rows(exp_dir)[trial]
    assert rows[-1]["training_iteration"] == epochs
    restored = [r for r in rows if r["iterations_since_restore"] < r["training_iteration"]]
    assert restored and restored[0]["training_iteration"] - restored[0]["iterations_since_restore"] >= min(2, kept)
