"""Cost of the search machinery around the Trainer: runs a space (default: search_spaces/default.yaml,
the demo) on the default synthetic store and prints

- the machine (CPU model, cores, load average before and after) and the wall time of the search;
- trials finished and stopped early, epochs trained;
- the share of trial time spent inside Trainer.run_epoch vs Ray/tuner overhead (trial start-up,
  checkpoints, reporting): per trial slot (sum of Ray's time_total_s) and per wall-time slot
  (wall time x concurrent trials);
- the searcher's suggestion time (OptunaSearch.suggest, timed in this driver process);
- peak RSS of each trial process (max over its reports) and of the whole run (driver + Ray +
  trial processes: the process tree of this driver, sampled every 0.5 s).

    .venv/bin/python benchmarks/tune_bench.py                    # the demo space
    .venv/bin/python benchmarks/tune_bench.py --space search_spaces/smoke.yaml --store STORE

Ray runs locally on loopback; results go to a temporary folder unless --storage is given.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_machine import describe_machine  # noqa: E402

from model.devices import usable_cpus  # noqa: E402
os.environ["PYTHONPATH"] = str(REPO) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _tree_rss_mb(root: int) -> float:
    """Resident memory of `root` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / 2**20


class PeakSampler(threading.Thread):
    """Samples the RSS of this process tree every `period` seconds and keeps the maximum."""

    def __init__(self, period: float = 0.5):
        super().__init__(daemon=True)
        self.period, self.peak, self._stop_event = period, 0.0, threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, _tree_rss_mb(os.getpid()))
            self._stop_event.wait(self.period)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return self.peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=str(REPO / "search_spaces" / "default.yaml"))
    parser.add_argument("--store", default=None, help="feature store (default: ./data/synthetic.store, built once)")
    parser.add_argument("--storage", default=None, help="results folder (default: a temporary one)")
    parser.add_argument("--num-samples", type=int, default=None)
    parser.add_argument("--num-cpus", type=int, default=None)
    args = parser.parse_args()

    from ray.tune.search.optuna import OptunaSearch

    from tuner.commands.common import demo_store
    from tuner.search.experiment import run_search
    from tuner.runs.run_dir import RunDir
    from tuner.space.parse import load_space
    from tuner.runs.trials import read_trials

    print(f"machine: {describe_machine()}")
    print(f"load average before: {load()}")
    space = load_space(args.space)
    if args.num_samples:
        space.budget.num_samples = args.num_samples
    store = Path(args.store) if args.store else demo_store()

    suggest_times: list[float] = []
    original = OptunaSearch.suggest

    def timed_suggest(self, trial_id):
        start = time.perf_counter()
        try:
            return original(self, trial_id)
        finally:
            suggest_times.append(time.perf_counter() - start)

    OptunaSearch.suggest = timed_suggest
    storage = args.storage or tempfile.mkdtemp(prefix="tune_bench-")
    run = RunDir(storage, f"bench-{time.strftime('%Y%m%d-%H%M%S')}")
    sampler = PeakSampler()
    sampler.start()
    start = time.perf_counter()
    run_search(space, Path(args.space).read_text(), str(store.resolve()), run, None, args.num_cpus)
    wall = time.perf_counter() - start
    peak_total = sampler.stop()
    import ray

    ray.shutdown()

    manifest = run.read_manifest()
    trials = [r for records in read_trials(run, manifest).values() for r in records]
    max_epochs = space.budget.max_epochs
    finished = [r for r in trials if r.status == "TERMINATED"]
    stopped = [r for r in finished if 0 < r.epochs < max_epochs]
    epochs = sum(r.epochs for r in trials)
    trainer_s = sum(row.get("time_run_epoch_s", 0.0) for r in trials for row in r.results)
    checkpoint_s = sum(row.get("time_checkpoint_s", 0.0) for r in trials for row in r.results)
    trial_s = sum(r.results[-1].get("time_total_s", 0.0) for r in trials if r.results)
    first_iter_s = [r.results[0]["time_this_iter_s"] - r.results[0].get("time_run_epoch_s", 0.0)
                    for r in trials if r.results]
    concurrency = space.resources.max_concurrent_trials or int((args.num_cpus or usable_cpus())
                                                               // space.resources.cpu)
    rss = [max(row.get("peak_rss_mb", 0.0) for row in r.results) for r in trials if r.results]

    print(f"space: {args.space} ({space.budget.num_samples} trials x {len(space.condition_values())} "
          f"condition(s), max {max_epochs} epochs, {space.resources.cpu:g} CPU per trial, {concurrency} at a time)")
    print(f"results: {run.uri}")
    print(f"wall time of the search: {wall:.1f} s")
    print(f"trials: {len(trials)} ({len(finished)} finished, {len(stopped)} stopped early by "
          f"{space.scheduler.type}), epochs trained: {epochs}")
    print(f"inside Trainer.run_epoch: {trainer_s:.1f} s; checkpoints: {checkpoint_s:.1f} s; "
          f"trial time (Ray time_total_s): {trial_s:.1f} s")
    if trial_s:
        print(f"  share of trial time in Trainer epochs: {trainer_s / trial_s:.1%} "
              f"(overhead {1 - trainer_s / trial_s:.1%}; target overhead <= 10%)")
    print(f"  share of wall x {concurrency} slots in Trainer epochs: {trainer_s / (wall * concurrency):.1%} "
          f"(overhead {1 - trainer_s / (wall * concurrency):.1%}, includes Ray start-up and idle slots)")
    if first_iter_s:
        print(f"  trial start-up before the first epoch: mean {sum(first_iter_s) / len(first_iter_s):.2f} s, "
              f"max {max(first_iter_s):.2f} s")
    if suggest_times:
        mean_ms = 1e3 * sum(suggest_times) / len(suggest_times)
        print(f"searcher suggestions: {len(suggest_times)} calls, mean {mean_ms:.1f} ms, "
              f"max {1e3 * max(suggest_times):.1f} ms, total {sum(suggest_times):.2f} s")
    if rss:
        print(f"peak RSS per trial process: mean {sum(rss) / len(rss):.0f} MB, max {max(rss):.0f} MB")
    print(f"peak RSS of the whole run (driver + Ray + trials): {peak_total:.0f} MB")
    print(f"load average after: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
