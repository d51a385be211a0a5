"""Statistics of a confirmation: intervals over seeds, paired tests and the Holm correction.

- `t_interval`: mean and Student-t confidence interval of one configuration's CCC over its seeds.
- `paired_t_test`: two configurations trained with the same seeds; the per-seed CCC differences,
  their mean, t-interval and two-sided p-value (`scipy.stats.ttest_rel`).
- `paired_bootstrap`: the same two configurations on the same test utterances; the utterances are
  resampled with replacement, both systems' CCC (mean over their seeds and the given attributes) is
  recomputed on each resample, and the percentile interval and two-sided p-value of the difference
  come from those resamples (seeded, so the numbers repeat).
- `holm`: Holm-Bonferroni adjusted p-values of a family of tests.

CCC here is the same as model.metrics.ccc (population moments; pairs with a NaN label are dropped).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

PAIRED_T = "paired t-test over seeds (scipy.stats.ttest_rel)"
BOOTSTRAP = "paired bootstrap over test utterances (percentile interval, two-sided)"
HOLM = "Holm-Bonferroni"
CONFIDENCE = 0.95
ALPHA = 0.05
RESAMPLES = 2000
_CHUNK = 250  # resamples per matrix product (bounds memory: CHUNK x utterances counts)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """Mean, standard deviation, n and the t-interval of the mean (`ci95` None below 2 values)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return {"mean": None, "sd": None, "n": 0, "ci95": None}
    mean = float(x.mean())
    if n < 2:
        return {"mean": mean, "sd": None, "n": 1, "ci95": None}
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "n": n, "ci95": [mean - half, mean + half]}


def paired_t_test(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """Paired t-test of a - b over seeds: diff (mean), its t-interval, t, df and the two-sided p.

    With fewer than two pairs, or differences that never vary, t is undefined: `p` is None then
    (1.0 when every difference is exactly 0)."""
    from scipy import stats

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_t_test: {a.size} values against {b.size}; the seeds must pair up")
    d = a - b
    out = {"test": PAIRED_T, "n": int(d.size), "diff": float(d.mean()) if d.size else None,
           "ci95": None, "t": None, "df": int(d.size) - 1 if d.size else None, "p": None}
    if d.size < 2 or np.ptp(d) == 0:
        if d.size and not d.any():
            out["p"] = 1.0
        return out
    res = stats.ttest_rel(a, b)
    ci = res.confidence_interval(confidence)
    out.update(t=float(res.statistic), p=float(res.pvalue), ci95=[float(ci.low), float(ci.high)])
    return out


def _ccc_from_sums(w, st, stt, sp, spp, stp):
    """CCC from weighted sums (arrays broadcast): w = sum of weights, st = sum w*t, ..."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mt, mp = st / w, sp / w
        vt, vp = stt / w - mt ** 2, spp / w - mp ** 2
        cov = stp / w - mt * mp
        denom = vt + vp + (mt - mp) ** 2
        out = 2.0 * cov / denom
    return np.where((w >= 2) & (denom > 0), out, 0.0)


def resampled_ccc(labels: np.ndarray, preds: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """CCC of every system for every resample: labels [n, A], preds [K, n, A] (K systems or seeds),
    counts [R, n] (how often each utterance is drawn) -> [R, K, A]. NaN labels are left out."""
    labels = np.asarray(labels, dtype=np.float64)
    preds = np.asarray(preds, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    R, (K, n, A) = counts.shape[0], preds.shape
    out = np.empty((R, K, A))
    for j in range(A):
        keep = np.isfinite(labels[:, j]) & np.isfinite(preds[:, :, j]).all(axis=0)
        t = np.where(keep, labels[:, j], 0.0)
        p = np.where(keep, preds[:, :, j], 0.0)                       # [K, n]
        m = keep.astype(np.float64)
        columns = np.stack([m, t, t * t, *p, *(p * p), *(p * t)], axis=1)   # [n, 3 + 3K]
        sums = counts @ columns                                            # [R, 3 + 3K]
        w, st, stt = sums[:, :1], sums[:, 1:2], sums[:, 2:3]
        sp, spp, stp = sums[:, 3:3 + K], sums[:, 3 + K:3 + 2 * K], sums[:, 3 + 2 * K:]
        out[:, :, j] = _ccc_from_sums(w, st, stt, sp, spp, stp)
    return out


def paired_bootstrap(labels: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray,
                     resamples: int = RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE) -> dict:
    """Paired bootstrap over utterances of CCC(a) - CCC(b), each the mean over seeds and attributes.

    labels [n, A] (or [n]); preds_a [Sa, n, A] and preds_b [Sb, n, A] (or [S, n]): the seeds'
    predictions of the same n utterances. Returns diff (on all utterances), the percentile interval
    `ci95` and the two-sided p-value 2 * min(P*(d <= 0), P*(d >= 0)) with the (k + 1) / (R + 1)
    correction, over `resamples` resamples drawn by numpy's default_rng(seed)."""
    labels = np.asarray(labels, dtype=np.float64)
    preds_a = np.asarray(preds_a, dtype=np.float64)
    preds_b = np.asarray(preds_b, dtype=np.float64)
    if labels.ndim == 1:
        labels, preds_a, preds_b = labels[:, None], preds_a[..., None], preds_b[..., None]
    n = labels.shape[0]
    if preds_a.shape[1:] != labels.shape or preds_b.shape[1:] != labels.shape:
        raise ValueError(f"paired_bootstrap: predictions {preds_a.shape[1:]} and {preds_b.shape[1:]} "
                         f"do not match the labels {labels.shape}")
    preds = np.concatenate([preds_a, preds_b])
    sa = preds_a.shape[0]

    def diffs(counts: np.ndarray) -> np.ndarray:
        ccc = resampled_ccc(labels, preds, counts).mean(axis=2)   # [R, Sa + Sb]
        return ccc[:, :sa].mean(axis=1) - ccc[:, sa:].mean(axis=1)

    observed = float(diffs(np.ones((1, n)))[0])
    rng = np.random.default_rng(seed)
    uniform = np.full(n, 1.0 / n)
    parts, left = [], resamples
    while left > 0:
        size = min(_CHUNK, left)
        parts.append(diffs(rng.multinomial(n, uniform, size=size)))
        left -= size
    boot = np.concatenate(parts)
    low, high = np.quantile(boot, [0.5 - confidence / 2, 0.5 + confidence / 2])
    below = (np.count_nonzero(boot <= 0) + 1) / (resamples + 1)
    above = (np.count_nonzero(boot >= 0) + 1) / (resamples + 1)
    return {"test": BOOTSTRAP, "diff": observed, "ci95": [float(low), float(high)],
            "p": float(min(1.0, 2 * min(below, above))), "resamples": int(resamples), "seed": int(seed),
            "utterances": int(n)}


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the input order (None stays None and is not counted)."""
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    m = len(present)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted
