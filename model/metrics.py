"""Evaluation metrics in numpy: concordance correlation coefficient and normalised mutual information."""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def ccc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Concordance correlation coefficient (population moments); pairs with a NaN are dropped, 0.0 if degenerate."""
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"ccc: y_true has {t.size} values but y_pred has {p.size}")
    keep = ~(np.isnan(t) | np.isnan(p))
    t, p = t[keep], p[keep]
    if t.size < 2:
        return 0.0
    mean_t, mean_p = t.mean(), p.mean()
    var_t, var_p = t.var(), p.var()
    cov = np.mean((t - mean_t) * (p - mean_p))
    denom = var_t + var_p + (mean_t - mean_p) ** 2
    if not denom > 0:  # both constant and equal: no concordance to measure
        return 0.0
    return float(2.0 * cov / denom)


def _entropy(counts: np.ndarray) -> float:
    """Shannon entropy (nats) of a vector of counts."""
    counts = counts[counts > 0].astype(np.float64)
    prob = counts / counts.sum()
    return float(-(prob * np.log(prob)).sum())


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised mutual information of two labelings, MI / mean(H(a), H(b)) (sklearn's default normalisation)."""
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"nmi: the two assignments differ in length ({a.size} vs {b.size})")
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    ka, kb = int(ia.max(initial=-1)) + 1, int(ib.max(initial=-1)) + 1
    if ka == kb and ka <= 1:  # neither splits the data (or no data): a perfect match, as sklearn says
        return 1.0
    table = np.zeros((ka, kb), dtype=np.float64)
    np.add.at(table, (ia, ib), 1.0)
    n = table.sum()
    row, col = table.sum(axis=1), table.sum(axis=0)
    nz = table > 0
    mi = float((table[nz] / n * np.log(table[nz] * n / np.outer(row, col)[nz])).sum())
    if mi <= 0.0:
        return 0.0
    denom = 0.5 * (_entropy(row) + _entropy(col))
    return float(min(1.0, mi / denom))


# ---- metric values for the outside world (checkpoints, JSON lines, Ray reports, TensorBoard) -------
def plain(value: Any) -> Any:
    """Metrics as plain Python numbers, strings, lists and dicts (numpy scalars and torch tensors converted)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if hasattr(value, "numel") and hasattr(value, "tolist"):   # a torch tensor (torch is not imported here)
        return value.item() if value.numel() == 1 else value.tolist()
    return value


def json_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """A metrics dict JSON can write: plain values, non-finite floats as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in plain(metrics).items()}


def finite_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics dict (booleans as 0/1) as plain floats; everything else left out."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool):
            out[key] = float(value)
        elif isinstance(value, (int, float)) or hasattr(value, "item"):
            try:
                v = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(v):
                out[key] = v
    return out


# ---- which value is better ---------------------------------------------------------------------
def beats(value: float | None, best: float | None, mode: str) -> bool:
    """Whether `value` beats the best so far `best` under `mode` (max or min): None or NaN never beats,
    and anything else beats a `best` of None or NaN (no best yet)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None or (isinstance(best, float) and math.isnan(best)):
        return True
    return value > best if mode == "max" else value < best
