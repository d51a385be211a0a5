"""Benchmark of `prepare` and the feature store: extraction speed, store open cost, chunk batch time.

    python benchmarks/prepare_bench.py [--corpus PATH] [--utterances 300] [--workers 2] [--keep DIR]

Without --corpus it synthesises one (model.synth). It prints, with the machine (CPU model, cores,
load average): extraction speed in times real time (logmel, --workers), the cost of the raw-frame
cache versus recomputing features, store open time and RSS delta (in a fresh subprocess), and the
time to build the chunks of a batch of 64 utterances (m 62, C 11) for float16 and float32 stores.
Targets: extraction >= 100x real time on 2 cores; open < 1 s and < 50 MB RSS; batch < 20 ms.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_machine import describe_machine  # noqa: E402

OPEN_PROBE = """
import json, sys, time
import numpy as np
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) * 1024
from model.store import FeatureStore
before = rss(); t = time.perf_counter()
store = FeatureStore.open(sys.argv[1])
ids = store.ids('Train', labeled=True)
elapsed = time.perf_counter() - t; after = rss()
print(json.dumps({"open_s": elapsed, "rss_delta_mb": (after - before) / 2**20, "frames": store.frames.shape[0]}))
"""


def open_cost(store: Path) -> dict:
    """Open time and RSS delta measured in a fresh interpreter (median of 3)."""
    runs = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", OPEN_PROBE, str(store)], capture_output=True, text=True,
                             check=True, cwd=REPO)
        runs.append(json.loads(out.stdout))
    return {k: statistics.median(r[k] for r in runs) for k in ("open_s", "rss_delta_mb")}


def batch_times(store_paths: dict[str, Path], m: int = 62, C: int = 11, batch: int = 64,
                repeats: int = 200) -> dict[str, dict[str, float]]:
    """Median wall and CPU ms (and CPU quartiles) to build one batch's chunks, stores interleaved."""
    import torch

    from model.chunking import make_chunks
    from model.store import FeatureStore

    torch.set_num_threads(1)
    stores = {k: FeatureStore.open(p) for k, p in store_paths.items()}
    n = min(len(s) for s in stores.values())
    rng = np.random.default_rng(0)
    wall: dict[str, list[float]] = {k: [] for k in stores}
    cpu: dict[str, list[float]] = {k: [] for k in stores}
    for r in range(repeats + 5):
        idx = rng.choice(n, size=min(batch, n), replace=n < batch)
        order = list(stores) if r % 2 else list(stores)[::-1]   # alternate who goes first
        for k in order:
            t, c = time.perf_counter(), time.process_time()
            x = make_chunks(stores[k], idx, m, C)
            if r >= 5:  # the first batches warm the page cache
                wall[k].append(time.perf_counter() - t)
                cpu[k].append(time.process_time() - c)
            assert x.shape == (len(idx) * C, 1, m, 128)
    return {k: {"wall": 1000 * statistics.median(wall[k]), "cpu": 1000 * statistics.median(cpu[k]),
                "cpu_p25": 1000 * float(np.percentile(cpu[k], 25)), "cpu_p75": 1000 * float(np.percentile(cpu[k], 75))}
            for k in stores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help="corpus to prepare (default: synthesise one)")
    parser.add_argument("--utterances", type=int, default=300, help="labelled utterances to synthesise")
    parser.add_argument("--unlabeled", type=int, default=100, help="unlabeled utterances to synthesise")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder)")
    args = parser.parse_args()

    from model.store import FeatureStore
    from model.store_build import prepare_store

    print(f"machine: {describe_machine()}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="prepare_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus
    if corpus is None:
        from model.synth import synthesize_corpus

        t = time.perf_counter()
        corpus = synthesize_corpus(work / "corpus", utterances=args.utterances, unlabeled=args.unlabeled,
                                   speakers=20, seed=0)
        print(f"synthesised {args.utterances}+{args.unlabeled} utterances in {time.perf_counter() - t:.1f} s")

    results = {}
    for dtype in ("float16", "float32"):
        out = work / f"store-{dtype}"
        t = time.perf_counter()
        report = prepare_store(corpus, out, features="logmel", workers=args.workers, dtype=dtype,
                               progress=False, force=True)
        wall = time.perf_counter() - t
        size = (out / "frames.npy").stat().st_size
        results[dtype] = out
        print(f"prepare {dtype}: {report['utterances']} utterances, {report['hours'] * 60:.1f} min of audio, "
              f"workers {args.workers}: extraction {report['extraction_seconds']:.2f} s = "
              f"{report['realtime_factor']:.0f}x real time; normalise pass (read cache, write frames) "
              f"{report['normalise_seconds']:.3f} s; total {wall:.2f} s; frames.npy {size / 2**20:.1f} MiB")
        if dtype == "float16":
            train = report["by_split"].get("Train", {}).get("hours", 0.0) / max(report["hours"], 1e-12)
            cache = report["cache_write_seconds"] + report["normalise_seconds"]
            redo = report["extraction_seconds"] * train
            print(f"cache vs recompute: caching raw float32 frames costs {report['cache_write_seconds']:.3f} s "
                  f"(write) + {report['normalise_seconds']:.3f} s (read back, normalise, write) = {cache:.3f} s; "
                  f"recomputing instead (pass 1 extracts Train for the terms, pass 2 extracts everything) "
                  f"costs a second extraction of Train ({train:.0%} of the audio): about {redo:.2f} s")

    a = FeatureStore.open(results["float32"])
    b = FeatureStore.open(results["float16"])
    diff = np.abs(a.frames[:] - b.frames[:].astype(np.float32))
    print(f"float16 vs float32 frames: max abs diff {diff.max():.2e}, mean {diff.mean():.2e} (values in [-3, 3])")
    for dtype, path in results.items():
        cost = open_cost(path)
        print(f"open {dtype}: {cost['open_s'] * 1000:.1f} ms, RSS delta {cost['rss_delta_mb']:.1f} MB "
              f"(fresh subprocess, median of 3)")
    for dtype, t in batch_times(results).items():
        print(f"chunk batch {dtype}: 64 utterances, m 62, C 11: {t['wall']:.2f} ms wall, {t['cpu']:.2f} ms CPU "
              f"(CPU quartiles {t['cpu_p25']:.2f}-{t['cpu_p75']:.2f}; medians of 200, dtypes interleaved, one thread)")
    if args.keep is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
