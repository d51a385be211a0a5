"""Conditions one after another against side by side: wall time and CPU utilisation of a search.

Runs the same two-condition search twice per repeat, `run --sequential` and the default (side by
side), alternating which goes first, on a local Ray with --num-cpus CPUs and a small synthetic store,
and prints per run:
- wall time of `python -m tuner run`;
- utilisation: busy CPU-seconds (each trial's span x its CPUs) over available CPU-seconds (the Ray
  CPUs x the time from the first trial's start to the last trial's end). A trial's span is taken
  from its result rows: end = last row's `timestamp`, start = that minus its `time_total_s`
  (Ray's timestamps are whole seconds, so each span is known to about 1 s).

    .venv/bin/python benchmarks/conditions_bench.py --repeats 2
    .venv/bin/python benchmarks/conditions_bench.py --address 127.0.0.2:6379 --num-cpus 2   # a running cluster
    .venv/bin/python benchmarks/conditions_bench.py --loopback-workers 2   # a head + 2 one-CPU workers here

With --address the searches join that Ray cluster (its environment, e.g. RAY_AUTH_MODE=token, is this
process's); --num-cpus must then be the cluster's CPU count (it is the utilisation's denominator and
`max_concurrent_trials`). --loopback-workers N starts a multi-node cluster on this machine for the
measurement (a head without CPUs and N one-CPU worker nodes on 127.0.0.2, token auth, as
tests/test_multinode.py starts them) and sets --address and --num-cpus to it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_machine import describe_machine  # noqa: E402

SPACE = {
    "metric": "val_ccc_mean", "mode": "max",
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "searcher": {"type": "tpe", "seed": 0, "n_startup_trials": 4},
    "conditions": {"labeled_ratio": [0.5, 1.0]},
    "parameters": {
        "temporal": {"choices": ["gru", "triplet"]}, "num_clusters": {"low": 2, "high": 6},
        "chunk_frames": {"choices": [16, 24]}, "chunks_per_sentence": 4,
        "lr_adam": {"low": 1.0e-4, "high": 1.0e-2, "log": True}, "width": 0.125, "batch_size": 8,
        "kmeans_iterations": 5, "precision": "fp32", "seed": 0,
    },
}


def utilisation(run_dir: Path, cpus_per_trial: float, ray_cpus: int) -> tuple[float, float, int]:
    """(utilisation, first-start-to-last-end seconds, trials) from the run's result rows."""
    from tuner.runs.run_dir import RunDir
    from tuner.runs.trials import read_trials

    run = RunDir(run_dir.parent, run_dir.name)
    spans = []
    for records in read_trials(run, run.read_manifest()).values():
        for rec in records:
            if rec.results:
                last = rec.results[-1]
                spans.append((last["timestamp"] - last["time_total_s"], last["timestamp"]))
    start, end = min(s for s, _ in spans), max(e for _, e in spans)
    busy = sum(e - s for s, e in spans) * cpus_per_trial
    return busy / (ray_cpus * (end - start)), end - start, len(spans)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None, help="feature store (default: a 96-utterance synthetic one, built once)")
    ap.add_argument("--trials", type=int, default=6, help="trials per condition")
    ap.add_argument("--epochs", type=int, default=4, help="max epochs of a trial")
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray (max_concurrent_trials too)")
    ap.add_argument("--repeats", type=int, default=1, help="pairs of runs (order alternates)")
    ap.add_argument("--address", default=None, help="run on this Ray cluster instead of a local Ray")
    ap.add_argument("--loopback-workers", type=int, default=0,
                    help="start a loopback multi-node cluster with this many one-CPU workers and run on it")
    args = ap.parse_args()
    if args.loopback_workers < 0 or args.num_cpus < 1:
        ap.error("--loopback-workers must be >= 0 and --num-cpus >= 1")
    work = Path(tempfile.mkdtemp(prefix="conditions-bench-"))
    cluster = None
    try:
        if args.loopback_workers:
            sys.path.insert(0, str(REPO / "tests"))
            from test_multinode import LoopbackCluster

            cluster = LoopbackCluster(work)
            cluster.start_head(num_cpus=0)
            for i in range(args.loopback_workers):
                cluster.add_worker(f"w{i + 1}", 1)
            args.address, args.num_cpus = cluster.address, args.loopback_workers
        store = args.store
        if store is None:
            from model.store_build import prepare_store
            from model.synth import synthesize_corpus

            corpus = synthesize_corpus(work / "corpus", utterances=96, unlabeled=32, speakers=8, seed=1)
            store = str(work / "store")
            prepare_store(corpus, store, progress=False)
        space = dict(SPACE, budget={"num_samples": args.trials, "max_epochs": args.epochs},
                     resources={"cpu": 1, "gpu": 0, "max_concurrent_trials": args.num_cpus})
        space_file = work / "space.yaml"
        space_file.write_text(yaml.safe_dump(space, sort_keys=False))
        env = dict(cluster.env() if cluster else os.environ, RAY_USAGE_STATS_ENABLED="0",
                   PYTHONPATH=str(REPO) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""))
        print(describe_machine())
        print(f"two conditions x {args.trials} trials, <= {args.epochs} epochs, ASHA, {args.num_cpus} CPUs, "
              f"{args.num_cpus} trials at a time in the run, on {args.address or 'a local Ray'}")
        results: dict[str, list[tuple[float, float]]] = {"sequential": [], "side by side": []}
        for repeat in range(args.repeats):
            order = ["sequential", "side by side"] if repeat % 2 == 0 else ["side by side", "sequential"]
            for mode in order:
                name = f"{mode.replace(' ', '-')}-{repeat}"
                ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
                cmd = [sys.executable, "-m", "tuner", "run", "--space", str(space_file), "--store", store,
                       "--name", name, "--storage", str(work / "results"),
                       *(["--address", args.address] if args.address else ["--num-cpus", str(args.num_cpus)])]
                if mode == "sequential":
                    cmd.append("--sequential")
                load = Path("/proc/loadavg").read_text().split()[0]
                t0 = time.perf_counter()
                run_env = env if args.address else dict(env, RAY_TMPDIR=ray_tmp)   # a cluster has its own
                proc = subprocess.run(cmd, cwd=work, env=run_env, capture_output=True, text=True)
                wall = time.perf_counter() - t0
                shutil.rmtree(ray_tmp, ignore_errors=True)
                if proc.returncode != 0:
                    sys.exit(f"{mode} run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
                util, span, n = utilisation(work / "results" / name, 1.0, args.num_cpus)
                results[mode].append((wall, util))
                print(f"{mode:>13}: wall {wall:6.1f} s, trials {n}, first start to last end {span:6.1f} s, "
                      f"utilisation {100 * util:5.1f} %   (load average before: {load})", flush=True)
        for mode, rows in results.items():
            walls, utils = [w for w, _ in rows], [u for _, u in rows]
            print(f"{mode:>13} mean: wall {sum(walls) / len(walls):6.1f} s, utilisation "
                  f"{100 * sum(utils) / len(utils):5.1f} %")
    finally:
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
