"""Per-epoch k-means cost at a fraction of MSP-Podcast scale, on the CPU, and its extrapolation.

    python benchmarks/kmeans_scale_bench.py [--scale 0.1] [--k 10 30] [--iterations 20] [--threads 2]

Chunk counts at full scale (docs/scaling.md): labeled ~240 h of ~6 s utterances = 144,000 sentences,
unlabeled 100,000 sentences, C = 11 chunks each, 256-wide embeddings. For each of the labeled and
unlabeled stage at `--scale`, it times
  * `model.clustering.kmeans` (what a trial runs: faiss trains on at most 256 points per centroid,
    then assigns every chunk, re-seeds empty clusters and computes the objective), and
  * plain faiss k-means on every point (max_points_per_centroid = N, as DeepCluster's code does),
and prints both with a linear extrapolation to full scale (assignment and full k-means are
O(N·K·d) per pass; the subsampled training is O(256·K·K·d) per iteration, independent of N).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_machine import describe_machine  # noqa: E402

LABELED_SENTENCES = 144_000     # ~240 h / 6 s
UNLABELED_SENTENCES = 100_000
CHUNKS_PER_SENTENCE = 11
DIM = 256


def embeddings(n: int, seed: int) -> np.ndarray:
    """n ReLU-like 256-wide vectors around 50 random centres (k-means time hardly depends on the data)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 50, n)] + 0.5 * rng.standard_normal((n, DIM)).astype(np.float32)
    return np.maximum(x, 0, out=x)


def time_project_kmeans(x: np.ndarray, k: int, iterations: int, use_gpu: bool = False) -> float:
    from model.clustering import kmeans

    start = time.perf_counter()
    kmeans(x, k, iterations=iterations, seed=0, use_gpu=use_gpu)
    return time.perf_counter() - start


def time_full_kmeans(x: np.ndarray, k: int, iterations: int, gpu: bool = False) -> float:
    import faiss

    start = time.perf_counter()
    km = faiss.Kmeans(x.shape[1], k, niter=iterations, seed=0, verbose=False, max_points_per_centroid=len(x),
                      gpu=1 if gpu else False)
    km.train(x)
    km.index.search(x, 1)
    return time.perf_counter() - start


def main() -> None:
    """Time both k-means variants for the labeled and unlabeled stage and extrapolate."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.1, help="fraction of the full chunk counts")
    parser.add_argument("--k", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs")
    args = parser.parse_args()

    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    stages = {"labeled": LABELED_SENTENCES, "unlabeled": UNLABELED_SENTENCES}
    print(f"machine: {describe_machine()}, threads {args.threads}, faiss {faiss.__version__}")
    rows = []
    for stage, sentences in stages.items():
        n_full = sentences * CHUNKS_PER_SENTENCE
        n = int(round(n_full * args.scale))
        x = embeddings(n, seed=1)
        for k in args.k:
            project = min(time_project_kmeans(x, k, args.iterations) for _ in range(args.repeats))
            full = min(time_full_kmeans(x, k, args.iterations) for _ in range(args.repeats))
            row = {"stage": stage, "chunks": n, "chunks_full_scale": n_full, "k": k,
                   "project_kmeans_s": round(project, 3), "full_kmeans_s": round(full, 3),
                   "project_kmeans_full_scale_s": round(project / args.scale, 2),
                   "full_kmeans_full_scale_s": round(full / args.scale, 2)}
            rows.append(row)
            print(f"{stage:9s} N={n:>9,d} K={k:>2d}: project k-means (subsampled to 256/centroid) "
                  f"{project:7.3f} s -> full scale ~{project / args.scale:7.1f} s | all-points k-means "
                  f"{full:7.3f} s -> full scale ~{full / args.scale:7.1f} s")
    print(json.dumps({"scale": args.scale, "iterations": args.iterations, "threads": args.threads,
                      "rows": rows}))


if __name__ == "__main__":
    main()
