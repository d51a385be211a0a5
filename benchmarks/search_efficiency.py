"""Early stopping on signal: rank correlation per epoch, and the epochs TPE + ASHA need.

    .venv/bin/python benchmarks/search_efficiency.py --out /tmp/search_efficiency.json
    .venv/bin/python benchmarks/search_efficiency.py --report /tmp/search_efficiency.json   # print it again

On the synthetic corpus, with search_spaces/default.yaml's parameters (budget, searcher, scheduler
and resources replaced), for every seed:
1. random search without early stopping: --trials trials, each run to --epochs epochs. Over all these
   full-length trials, for each epoch e, the Spearman rank correlation between the trial's
   val_ccc_mean at epoch e (and its best so far at e) and its final best: how well a scheduler
   judging at epoch e would rank the trials;
2. TPE + ASHA for each --asha setting GRACE:RANK_BY (reduction factor 3, --asha-trials trials): the
   epochs it trained, in the order they finished, until one reported at least the best
   val_ccc_mean that the random search reached with its whole budget (trials x epochs). Goal: at
   most a third of that budget.
Everything runs through tuner.search.experiment.run_search on a local Ray (loopback), two trials at a
time. Finished runs are kept in --out and skipped when the command is run again.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ["PYTHONPATH"] = str(REPO) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")

from bench_machine import describe_machine  # noqa: E402

METRIC = "val_ccc_mean"


def space_for(base: dict, searcher: dict, scheduler: dict | str, trials: int, epochs: int, concurrent: int) -> dict:
    """The default space's parameters with this run's budget, searcher and scheduler."""
    return {**base, "budget": {"num_samples": trials, "max_epochs": epochs}, "searcher": searcher,
            "scheduler": scheduler, "resources": {"cpu": 1, "gpu": 0, "max_concurrent_trials": concurrent}}


def run_space(raw: dict, store: Path, storage: Path, name: str, num_cpus: int) -> list[list[dict]]:
    """Run one search; the result rows (val_ccc_mean, epoch, timestamp) of each trial."""
    import yaml

    from tuner.search.experiment import run_search
    from tuner.runs.run_dir import RunDir
    from tuner.space.parse import parse_space
    from tuner.runs.trials import read_condition

    text = yaml.safe_dump(raw, sort_keys=False)
    space = parse_space(raw, f"search_efficiency:{name}")
    run = RunDir(storage, name)
    run_search(space, text, str(store), run, None, num_cpus)
    trials = []
    for rec in read_condition(run, "all", METRIC, "max"):
        trials.append([{"epoch": int(r["training_iteration"]), METRIC: r.get(METRIC), "timestamp": r["timestamp"],
                        "time_total_s": r.get("time_total_s", 0.0), "temporal": rec.config.get("temporal")}
                       for r in rec.results])
    return trials


def spearman_by_epoch(curves: list[list[float]]) -> list[dict]:
    """Per epoch e: Spearman of (value at e, final best) and (best so far at e, final best) over full-length curves."""
    import numpy as np
    from scipy.stats import spearmanr

    values = np.array(curves, dtype=float)  # [trials, epochs]
    final = np.nanmax(values, axis=1)
    running = np.fmax.accumulate(values, axis=1)
    out = []
    for e in range(values.shape[1]):
        now = spearmanr(values[:, e], final, nan_policy="omit").statistic
        best = spearmanr(running[:, e], final, nan_policy="omit").statistic
        out.append({"epoch": e + 1, "current": round(float(now), 3), "best_so_far": round(float(best), 3)})
    return out


def finishing_order(trials: list[list[dict]]) -> list[dict]:
    """Every result row of a search, in the order the epochs finished."""
    return sorted((r for t in trials for r in t), key=lambda r: (r["timestamp"], r["time_total_s"]))


def epochs_to_target(trials: list[list[dict]], target: float) -> tuple[int | None, int, float]:
    """(epochs trained, in finishing order, until a report >= target or None; all epochs; best reached)."""
    rows = finishing_order(trials)
    reached = None
    for i, r in enumerate(rows, 1):
        if r[METRIC] is not None and r[METRIC] >= target:
            reached = i
            break
    return reached, len(rows), best_within(trials, len(rows))


def best_within(trials: list[list[dict]], epochs: int) -> float:
    """The best value a search had reported after its first `epochs` epochs (in finishing order)."""
    return max((r[METRIC] for r in finishing_order(trials)[:epochs] if r[METRIC] is not None), default=float("nan"))


def report(results: dict) -> None:
    args = results["args"]
    budget = args["trials"] * args["epochs"]
    print(f"machine at the start: {results['machine']}")
    random_runs = {k: v for k, v in results["runs"].items() if k.startswith("random-")}
    curves = [[r[METRIC] for r in t] for run in random_runs.values() for t in run["trials"]
              if len(t) == args["epochs"]]
    if curves:
        print(f"\nrank correlation with the final best ({len(curves)} full-length random-search trials, "
              f"{args['epochs']} epochs):")
        print(f"{'epoch':>5} {'current':>8} {'best so far':>11}")
        for row in spearman_by_epoch(curves):
            print(f"{row['epoch']:>5} {row['current']:>8.3f} {row['best_so_far']:>11.3f}")
    print(f"\nepochs to reach the random search's best ({args['trials']} trials x {args['epochs']} epochs = "
          f"{budget} epochs per seed; goal <= {budget / 3:.0f}):")
    third = budget // 3
    print(f"{'setting':>14} {'seed':>4} {'target':>7} {'epochs to target':>16} {'share':>6} {'epochs':>6} {'best':>6} "
          f"{f'best@{third}':>8} {f'random@{third}':>10} {f'best@{budget}':>8}")
    for key, run in results["runs"].items():
        if not key.startswith("asha-"):
            continue
        _, setting, seed = key.split("-", 2)
        target = results["runs"][f"random-{seed}"]["best"]
        reached, total, best = epochs_to_target(run["trials"], target)
        share = f"{reached / budget:.2f}" if reached else "-"
        random_trials = results["runs"][f"random-{seed}"]["trials"]
        print(f"{setting:>14} {seed:>4} {target:7.3f} {str(reached or 'not reached'):>16} {share:>6} {total:>6} "
              f"{best:6.3f} {best_within(run['trials'], third):8.3f} {best_within(random_trials, third):10.3f} "
              f"{best_within(run['trials'], budget):8.3f}")
    print(f"(best@N: the best {METRIC} a search had after N epochs; random@{third}: the random search's after {third})")
    print(f"\nwall time: {sum(r['wall_s'] for r in results['runs'].values()) / 60:.1f} min; load averages seen: "
          f"{', '.join(r['load'] for r in results['runs'].values())}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="search_efficiency.json", help="results (kept; finished runs are skipped)")
    p.add_argument("--report", help="only print the report of this results file")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--trials", type=int, default=8, help="random-search trials per seed")
    p.add_argument("--epochs", type=int, default=6, help="epochs per trial (budget.max_epochs)")
    p.add_argument("--asha", default="1:current,2:current,2:best", help="GRACE:RANK_BY settings of TPE + ASHA")
    p.add_argument("--asha-trials", type=int, default=12, help="TPE + ASHA trials per seed")
    p.add_argument("--asha-seed-offset", type=int, default=0,
                   help="TPE's seed is the random search's plus this; with 0 (as measured in docs/search.md) TPE's "
                        "random start-up trials repeat the random search's first configurations")
    p.add_argument("--utterances", type=int, default=300, help="labelled utterances of the synthetic corpus")
    p.add_argument("--store", help="a feature store to search on instead of the synthetic corpus (e.g. a sample of yours)")
    p.add_argument("--cache", default="/tmp/deepemocluster-bench")
    p.add_argument("--storage", default=None, help="results folder of the searches (default: a temporary one)")
    p.add_argument("--num-cpus", type=int, default=2)
    args = p.parse_args()
    if args.report:
        report(json.loads(Path(args.report).read_text()))
        return 0

    import yaml

    from epoch_bench import ensure_store
    from model.atomic_files import atomic_write

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    results.update(args=vars(args), machine=describe_machine())
    base = yaml.safe_load((REPO / "search_spaces" / "default.yaml").read_text())
    # FSL: no unlabeled pool
    store = Path(args.store).resolve() if args.store else ensure_store(Path(args.cache), args.utterances, 0, 0)
    storage = Path(args.storage or tempfile.mkdtemp(prefix="search_efficiency-"))
    seeds = [int(s) for s in args.seeds.split(",")]
    plan = []
    for seed in seeds:
        plan.append((f"random-{seed}", space_for(base, {"type": "random", "seed": seed}, "none", args.trials,
                                                 args.epochs, 2)))
    for seed in seeds:
        for setting in [s for s in args.asha.split(",") if s]:
            grace, rank_by = setting.split(":")
            scheduler = {"type": "asha", "grace_period": int(grace), "reduction_factor": 3, "rank_by": rank_by}
            searcher = {"type": "tpe", "seed": seed + args.asha_seed_offset, "n_startup_trials": 5}
            plan.append((f"asha-g{grace}{rank_by}-{seed}",
                         space_for(base, searcher, scheduler, args.asha_trials, args.epochs, 2)))
    for key, raw in plan:
        if key in results["runs"]:
            continue
        print(f"[search_efficiency] {key} ...", flush=True)
        start = time.perf_counter()
        trials = run_space(raw, store, storage, f"{key}-{time.strftime('%H%M%S')}", args.num_cpus)
        best = max((r[METRIC] for t in trials for r in t if r[METRIC] is not None), default=None)
        results["runs"][key] = {"trials": trials, "best": best, "wall_s": time.perf_counter() - start,
                                "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
                                "epochs": sum(len(t) for t in trials)}
        atomic_write(out, json.dumps(results, indent=1))
        print(f"[search_efficiency] {key}: {results['runs'][key]['epochs']} epochs, best {best}, "
              f"{results['runs'][key]['wall_s']:.0f} s", flush=True)
    report(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
