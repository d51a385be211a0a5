"""K-means of chunk embeddings with faiss, optional PCA-whitening, and re-seeding of empty clusters.

faiss trains on at most `max_points_per_centroid` (256) points per centroid: with more than 256·K
embeddings it fits the centroids on a random subsample (drawn from `seed`) and then assigns every point.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from importlib import metadata

import numpy as np

from model.errors import UserError

MAX_POINTS_PER_CENTROID = 256  # faiss's default: larger inputs are subsampled for training the centroids
BLOCK_ROWS = 65536  # rows per block for the float64 statistics
# PyPI distributions that provide the `faiss` module (the project's extras: cpu -> faiss-cpu, gpu -> faiss-gpu)
FAISS_DISTRIBUTIONS = ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss-gpu-cuvs",
                       "faiss-gpu-cu12-cuvs", "faiss-gpu-cu13-cuvs", "faiss-cuda")
INSTALL_HINT = ('install one faiss build with the project\'s extras: pip install "deepemocluster-tuner[cpu]" '
                '(faiss-cpu) or, on a node with an NVIDIA GPU, "deepemocluster-tuner[gpu]" (faiss-gpu) into an '
                'environment without faiss-cpu')
_warned_cpu_on_gpu_node = False


@dataclass
class KMeansResult:
    """Pseudo-labels of one k-means run and its statistics."""

    assignments: np.ndarray  # int64 [N], cluster id of every point
    sizes: np.ndarray  # int64 [k], points per cluster
    reseeded: int  # empty clusters that were re-seeded by splitting a large one
    objective: float  # sum of squared distances of the points to their cluster means (after whitening)
    seconds: float  # wall time of the whole call


def faiss_builds() -> dict[str, str]:
    """The installed faiss distributions and their versions, e.g. {"faiss-cpu": "1.15.1"}."""
    found = {}
    for name in FAISS_DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def import_faiss():
    """The faiss module, or a UserError saying which extra to install."""
    try:
        import faiss
    except ImportError as exc:
        raise UserError(f"faiss is not installed ({exc}); {INSTALL_HINT}") from None
    return faiss


def _warn_cpu_kmeans_on_gpu_node() -> None:
    """Say once per process that a CUDA node clusters on the CPU because its faiss build has no GPU."""
    global _warned_cpu_on_gpu_node
    if _warned_cpu_on_gpu_node:
        return
    _warned_cpu_on_gpu_node = True
    builds = ", ".join(f"{k} {v}" for k, v in faiss_builds().items()) or "unknown"
    warnings.warn(f"k-means runs on the CPU although torch sees a CUDA GPU: the installed faiss ({builds}) has no "
                  "GPU support. For GPU k-means, use a fresh environment with pip install "
                  '"deepemocluster-tuner[gpu]" (faiss-gpu>=1.14.3, no faiss-cpu)', RuntimeWarning, stacklevel=3)


def _faiss_gpus(faiss) -> int:
    """Number of GPUs this faiss build can use (faiss-cpu has no get_num_gpus)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def _blocks(n: int, size: int = BLOCK_ROWS):
    """Slices covering range(n) in blocks, so that float64 work never copies a whole large array."""
    return (slice(i, min(i + size, n)) for i in range(0, n, size))


def pca_whiten(x: np.ndarray, rel_tol: float = 1e-6) -> np.ndarray:
    """PCA-whiten (eigen power -0.5) and L2-normalise the rows, as DeepCluster does.

    Directions whose variance is below rel_tol times the largest (e.g. dead ReLU units) are dropped
    instead of being blown up, so the result can have fewer columns than x.
    """
    n, d = x.shape
    mean = np.zeros(d)
    for b in _blocks(n):
        mean += x[b].sum(axis=0, dtype=np.float64)
    mean /= max(n, 1)
    cov = np.zeros((d, d))
    for b in _blocks(n):
        xb = x[b].astype(np.float64) - mean
        cov += xb.T @ xb
    eigval, eigvec = np.linalg.eigh(cov / max(n - 1, 1))
    order = np.argsort(eigval)[::-1]
    eigval, eigvec = eigval[order], eigvec[:, order]
    keep = eigval > rel_tol * max(float(eigval[0]), 0.0)
    if not keep.any():  # all points identical: nothing to whiten
        return np.zeros((n, 1), dtype=np.float32)
    project = eigvec[:, keep] / np.sqrt(eigval[keep])
    out = np.empty((n, int(keep.sum())), dtype=np.float32)
    for b in _blocks(n):
        y = (x[b].astype(np.float64) - mean) @ project
        norms = np.linalg.norm(y, axis=1, keepdims=True)
        out[b] = y / np.where(norms > 0, norms, 1.0)
    return out


def _reseed_empty(x: np.ndarray, assignments: np.ndarray, k: int, rng: np.random.Generator) -> int:
    """Give every empty cluster half of the largest cluster (split across a random direction); returns the count."""
    sizes = np.bincount(assignments, minlength=k)
    empty = np.flatnonzero(sizes == 0)
    for e in empty:
        big = int(np.argmax(sizes))  # >= 2 points whenever N >= k and a cluster is empty
        members = np.flatnonzero(assignments == big)
        centre = x[members].mean(axis=0)
        direction = rng.standard_normal(x.shape[1])
        # the perturbed centroid pair centre ± eps·direction splits the cluster along this projection;
        # taking the upper half by rank (stable) keeps both halves non-empty even for duplicated points
        side = (x[members] - centre) @ direction
        moved = members[np.argsort(side, kind="stable")[len(members) - len(members) // 2:]]
        assignments[moved] = e
        sizes[big] -= len(moved)
        sizes[e] = len(moved)
    return int(len(empty))


def _objective(x: np.ndarray, assignments: np.ndarray, k: int) -> float:
    """Sum of squared distances of the points to the means of their clusters: Σ|x|² − Σ_c |S_c|²/n_c."""
    n, d = x.shape
    sums = np.zeros((k, d))
    total = 0.0
    for b in _blocks(n):
        xb = x[b].astype(np.float64)
        for j in range(d):  # per-dimension cluster sums; bincount beats np.add.at and one-hot products
            sums[:, j] += np.bincount(assignments[b], weights=xb[:, j], minlength=k)
        total += float(np.einsum("ij,ij->", xb, xb))
    sizes = np.maximum(np.bincount(assignments, minlength=k), 1)
    return max(0.0, total - float(((sums ** 2).sum(axis=1) / sizes).sum()))


def kmeans(x: np.ndarray, k: int, iterations: int = 20, seed: int = 0, whiten: bool = False,
           use_gpu: bool | None = None) -> KMeansResult:
    """Cluster the rows of x into k non-empty clusters (when N >= k) with faiss L2 k-means.

    use_gpu None: the GPU when this faiss build has one (a warning when torch sees CUDA but faiss does not)."""
    import torch

    faiss = import_faiss()

    start = time.perf_counter()
    x = np.asarray(x)
    if x.ndim != 2:
        raise UserError(f"k-means needs a 2-D array of embeddings [N, D], got shape {x.shape}")
    n, d = x.shape
    if k < 1:
        raise UserError(f"k-means needs num_clusters K >= 1, got {k}")
    if n < k:
        raise UserError(f"there are fewer samples (chunks) than clusters K: {n} chunks for K = {k}; "
                        "lower num_clusters or use more data")
    bad = sum(int((~np.isfinite(x[b])).any(axis=1).sum()) for b in _blocks(n))
    if bad:
        raise UserError(f"k-means got non-finite embeddings ({bad} of {n} rows hold NaN or inf); "
                        "the network diverged: lower the learning rates or check the features")
    data = np.ascontiguousarray(x, dtype=np.float32)
    if whiten:
        data = pca_whiten(data)
        d = data.shape[1]
    gpus = _faiss_gpus(faiss)
    if use_gpu is None:
        use_gpu = gpus > 0
        if not use_gpu and torch.cuda.is_available():
            _warn_cpu_kmeans_on_gpu_node()
    if use_gpu and gpus == 0:
        raise UserError("k-means was asked to use a GPU but this faiss build has none "
                        f"({', '.join(faiss_builds()) or 'no faiss distribution found'}); {INSTALL_HINT}")

    seed = int(seed) % 2**31  # faiss takes a C int; trainers may pass seed + epoch or a hash
    threads_before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, torch.get_num_threads()))
    try:
        # min_points_per_centroid=1 only silences faiss's "WARNING clustering" message for small N
        km = faiss.Kmeans(d, k, niter=iterations, seed=seed, gpu=1 if use_gpu else False,
                          verbose=False, min_points_per_centroid=1,
                          max_points_per_centroid=MAX_POINTS_PER_CENTROID)
        km.train(data)
        _, labels = km.index.search(data, 1)
    finally:
        faiss.omp_set_num_threads(threads_before)
    assignments = labels.ravel().astype(np.int64)
    reseeded = _reseed_empty(data, assignments, k, np.random.default_rng(seed))
    return KMeansResult(assignments=assignments, sizes=np.bincount(assignments, minlength=k).astype(np.int64),
                        reseeded=reseeded, objective=_objective(data, assignments, k),
                        seconds=time.perf_counter() - start)
