"""Epoch time of `python -m tuner train` against the same configuration as a one-trial search.

Both run on one store (default: the reference's timing setting, 300 Train + 100 Validation
utterances, FSL), interleaved, one process tree per run, the order rotating by repeat:

- train: `python -m tuner train --set ...`, the epochs' `time_epoch_s` from its metrics.jsonl;
- trial: `python -m tuner run` of a space whose every parameter is fixed to the same values, one
  trial, no early stopping, a local Ray with --threads CPUs (the trial trains in a thread of a Ray
  worker); the epochs' `time_epoch_s` from the trial's result.json;
- with --compare CHECKOUT, that checkout's trial too (its code, the same space and store), e.g. a
  `git worktree` of the previous main.

It prints each run's epoch times, their median after the first epoch (steady), the load average,
and the ratios: trial / train, and the other checkout's trial / this one's.

    git worktree add --detach /tmp/old <previous main>
    .venv/bin/python benchmarks/trial_bench.py --repeats 3 --epochs 3 --compare /tmp/old

Defaults: width 1.0, m 62, C 11, K 10, batch 32, gru, bf16 where the CPU has it (precision auto).
Wall times: run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_machine import describe_machine  # noqa: E402
from epoch_bench import add_setting_arguments, setting_store  # noqa: E402

from model.devices import usable_cpus  # noqa: E402


def train_config(args, seed: int) -> dict:
    """The TrainConfig keys both ways of training get (epochs: the trial's come from the budget)."""
    return {"temporal": args.temporal, "chunk_frames": args.m, "chunks_per_sentence": args.C,
            "num_clusters": args.k, "batch_size": args.batch, "width": args.width, "precision": args.precision,
            "unlabeled_pool": 0, "seed": seed}


def space_text(config: dict, epochs: int, cpus: int) -> str:
    """A search space of one trial whose parameters are all fixed to `config`."""
    space = {"metric": "val_ccc_mean", "mode": "max", "budget": {"num_samples": 1, "max_epochs": epochs},
             "scheduler": "none", "searcher": {"type": "random", "seed": 0},
             "resources": {"cpu": cpus, "gpu": 0, "max_concurrent_trials": 1},
             "conditions": {"labeled_ratio": [1.0]}, "parameters": config}
    return yaml.safe_dump(space, sort_keys=False)


def tuner_command(checkout: Path, args: list[str], work: Path) -> None:
    """`python -m tuner ARGS` with `checkout`'s code, Ray's files in a short folder of its own."""
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = {**os.environ, "PYTHONPATH": str(checkout), "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    try:
        out = subprocess.run([sys.executable, "-m", "tuner", *args], cwd=checkout, env=env,
                             capture_output=True, text=True)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    (work / "log.txt").write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise RuntimeError(f"{checkout}: python -m tuner {args[0]} failed ({out.returncode}): {out.stderr[-2000:]}")


def run_train(checkout: Path, store: Path, config: dict, epochs: int, threads: int, work: Path) -> list[float]:
    sets = [f"{k}={'null' if v is None else v}" for k, v in {**config, "epochs": epochs, "num_threads": threads}.items()]
    tuner_command(checkout, ["train", "--store", str(store), "--out", str(work / "out"), "--set", *sets], work)
    rows = [json.loads(line) for line in (work / "out" / "metrics.jsonl").read_text().splitlines()]
    return [row["time_epoch_s"] for row in rows]


def run_trial(checkout: Path, store: Path, config: dict, epochs: int, threads: int, work: Path) -> list[float]:
    space = work / "space.yaml"
    space.write_text(space_text(config, epochs, threads))
    tuner_command(checkout, ["run", "--space", str(space), "--store", str(store), "--name", "bench",
                             "--storage", str(work / "results"), "--num-cpus", str(threads)], work)
    (result,) = (work / "results" / "bench").glob("*/trial_*/result.json")
    rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
    return [row["time_epoch_s"] for row in rows]


def steady(times: list[float]) -> float:
    """The median epoch after the first (the first one warms up allocator and kernels)."""
    return float(np.median(times[1:] if len(times) > 1 else times))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="rounds of (train, trial[, other trial]), seeds 0, 1, ...")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run")
    p.add_argument("--compare", type=Path, help="another checkout whose trial runs in each round too")
    add_setting_arguments(p)
    args = p.parse_args()
    threads = args.threads or usable_cpus()
    store = setting_store(args)
    kinds = [("train", REPO, run_train), ("trial", REPO, run_trial)]
    if args.compare:
        kinds.append(("other trial", args.compare.resolve(), run_trial))
    print(describe_machine(), flush=True)
    print(f"store {store}; {json.dumps(train_config(args, 0))}, {args.epochs} epochs per run, {threads} threads",
          flush=True)
    print(f"{'seed':>4} {'run':>11} {'epoch s (each)':>24} {'steady s':>8} {'load':>5}", flush=True)
    results: dict[str, list[float]] = {name: [] for name, *_ in kinds}
    for seed in range(args.repeats):
        order = kinds[seed % len(kinds):] + kinds[:seed % len(kinds)]
        for name, checkout, run in order:
            with tempfile.TemporaryDirectory(prefix="trial-bench-") as work:
                times = run(checkout, store, train_config(args, seed), args.epochs, threads, Path(work))
            results[name].append(steady(times))
            print(f"{seed:>4} {name:>11} {' '.join(f'{t:.1f}' for t in times):>24} {steady(times):8.1f} "
                  f"{os.getloadavg()[0]:5.1f}", flush=True)
    median = {name: float(np.median(v)) for name, v in results.items()}
    print(f"median steady epoch: train {median['train']:.1f} s, trial {median['trial']:.1f} s "
          f"-> trial / train {median['trial'] / median['train']:.2f}")
    if args.compare:
        print(f"{args.compare}'s trial: {median['other trial']:.1f} s -> this trial's throughput "
              f"{median['other trial'] / median['trial']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
