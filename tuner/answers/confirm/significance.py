"""Statistics of a confirmation: intervals over seeds, paired tests and the Holm correction.

- `t_interval`: mean and Student-t confidence interval of one configuration's CCC over its seeds.
- `paired_t_test`: two configurations trained with the same seeds; the per-seed CCC differences,
  their mean, t-interval and two-sided p-value (`scipy.stats.ttest_rel`).
- `paired_bootstrap`: the same two configurations on the same test utterances; the utterances are
  resampled with replacement, both systems' CCC (mean over their seeds and the given attributes) is
  recomputed on each resample, and the percentile interval and two-sided p-value of the difference
  come from those resamples (seeded, so the numbers repeat).
  The seeds are fixed: a statement about these trained models, not about the method.
- `method_test`: the test that decides whether a method is better: the mean per-seed CCC difference,
  its variance from the paired seeds and from the test speakers (resampled as whole speakers), and
  a Student-t p-value and interval with S - 1 degrees of freedom (see its docstring).
- `holm`: Holm-Bonferroni adjusted p-values of a family of tests.

CCC here is the same as model.metrics.ccc (population moments; pairs with a NaN label are dropped).
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import numpy as np

PAIRED_T = "paired t-test over seeds (scipy.stats.ttest_rel)"
METHOD = ("method-level test over seeds and speakers (Student-t, S - 1 df, on the mean per-seed CCC difference; "
          "variance: the paired seeds' + the part the seeds share, from a bootstrap over test speakers)")
BOOTSTRAP = ("paired bootstrap over test utterances of these trained models (seeds fixed; percentile interval, "
             "two-sided)")
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
    with warnings.catch_warnings():   # seeds that agree exactly: scipy warns of a zero variance, the interval is [mean, mean]
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
    return {"mean": mean, "sd": float(x.std(ddof=1)), "n": n, "ci95": [float(ci.low), float(ci.high)]}


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


def resampled_ccc(labels: np.ndarray, preds: np.ndarray, counts: np.ndarray,
                  groups: np.ndarray | None = None) -> np.ndarray:
    """CCC of every system for every resample: labels [n, A], preds [K, n, A] (K systems or seeds),
    counts [R, n] (how often each utterance is drawn), or with `groups` (codes 0..G-1 [n]) counts
    [R, G] (how often each group is drawn, all its utterances with it) -> [R, K, A]. NaN labels are
    left out."""
    labels = np.asarray(labels, dtype=np.float64)
    preds = np.asarray(preds, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    R, (K, _, A) = counts.shape[0], preds.shape
    out = np.empty((R, K, A))
    for j in range(A):
        keep = np.isfinite(labels[:, j]) & np.isfinite(preds[:, :, j]).all(axis=0)
        t = np.where(keep, labels[:, j], 0.0)
        p = np.where(keep, preds[:, :, j], 0.0)                       # [K, n]
        m = keep.astype(np.float64)
        columns = np.stack([m, t, t * t, *p, *(p * p), *(p * t)], axis=1)   # [n, 3 + 3K]
        if groups is not None:                                             # [G, 3 + 3K]: each group's sums
            columns = np.stack([np.bincount(groups, weights=col, minlength=counts.shape[1]) for col in columns.T], 1)
        sums = counts @ columns                                            # [R, 3 + 3K]
        w, st, stt = sums[:, :1], sums[:, 1:2], sums[:, 2:3]
        sp, spp, stp = sums[:, 3:3 + K], sums[:, 3 + K:3 + 2 * K], sums[:, 3 + 2 * K:]
        out[:, :, j] = _ccc_from_sums(w, st, stt, sp, spp, stp)
    return out


def _as_systems(what: str, labels, preds_a, preds_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """labels [n, A] and predictions [S, n, A] as float arrays ([n] and [S, n]: one attribute)."""
    labels = np.asarray(labels, dtype=np.float64)
    preds_a = np.asarray(preds_a, dtype=np.float64)
    preds_b = np.asarray(preds_b, dtype=np.float64)
    if labels.ndim == 1:
        labels, preds_a, preds_b = labels[:, None], preds_a[..., None], preds_b[..., None]
    if preds_a.shape[1:] != labels.shape or preds_b.shape[1:] != labels.shape:
        raise ValueError(f"{what}: predictions {preds_a.shape[1:]} and {preds_b.shape[1:]} "
                         f"do not match the labels {labels.shape}")
    return labels, preds_a, preds_b


def _resampled(diffs: Callable[[np.ndarray], np.ndarray], units: int, resamples: int, seed: int) -> np.ndarray:
    """diffs(counts) over `resamples` draws of `units` units with replacement (numpy's default_rng(seed)),
    drawn _CHUNK at a time."""
    rng = np.random.default_rng(seed)
    parts, left = [], resamples
    while left > 0:
        size = min(_CHUNK, left)
        drawn = rng.integers(0, units, size=(size, units)) + units * np.arange(size)[:, None]
        parts.append(diffs(np.bincount(drawn.ravel(), minlength=size * units).reshape(size, units)))
        left -= size
    return np.concatenate(parts)


def paired_bootstrap(labels: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray,
                     resamples: int = RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE) -> dict:
    """Paired bootstrap over utterances of CCC(a) - CCC(b), each the mean over seeds and attributes.

    labels [n, A] (or [n]); preds_a [Sa, n, A] and preds_b [Sb, n, A] (or [S, n]): the seeds'
    predictions of the same n utterances. Returns diff (on all utterances), the percentile interval
    `ci95` and the two-sided p-value 2 * min(P*(d <= 0), P*(d >= 0)) with the (k + 1) / (R + 1)
    correction, over `resamples` resamples drawn by numpy's default_rng(seed). The seeds are fixed:
    this is a statement about these trained models on a test set of this size, not about the method."""
    labels, preds_a, preds_b = _as_systems("paired_bootstrap", labels, preds_a, preds_b)
    n = labels.shape[0]
    preds = np.concatenate([preds_a, preds_b])
    sa = preds_a.shape[0]

    def diffs(counts: np.ndarray) -> np.ndarray:
        ccc = resampled_ccc(labels, preds, counts).mean(axis=2)   # [R, Sa + Sb]
        return ccc[:, :sa].mean(axis=1) - ccc[:, sa:].mean(axis=1)

    observed = float(diffs(np.ones((1, n)))[0])
    boot = _resampled(diffs, n, resamples, seed)
    low, high = np.quantile(boot, [0.5 - confidence / 2, 0.5 + confidence / 2])
    below = (np.count_nonzero(boot <= 0) + 1) / (resamples + 1)
    above = (np.count_nonzero(boot >= 0) + 1) / (resamples + 1)
    return {"test": BOOTSTRAP, "diff": observed, "ci95": [float(low), float(high)],
            "p": float(min(1.0, 2 * min(below, above))), "resamples": int(resamples), "seed": int(seed),
            "utterances": int(n)}


def speaker_groups(speakers: Sequence[int]) -> np.ndarray:
    """Group codes 0..G-1 of utterances by speaker code: one group per speaker, and a group of its
    own for every utterance without one (code -1)."""
    speakers = np.asarray(speakers, dtype=np.int64)
    known = speakers >= 0
    codes = np.empty(speakers.size, dtype=np.int64)
    codes[known] = np.unique(speakers[known], return_inverse=True)[1]
    first = int(codes[known].max()) + 1 if known.any() else 0
    codes[~known] = first + np.arange(np.count_nonzero(~known))
    return codes


def method_test(labels: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray, speakers: Sequence[int],
                resamples: int = RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE) -> dict:
    """Is method a better than method b: the mean over paired seeds of d_s = CCC(a_s) - CCC(b_s) (each
    CCC the mean over attributes, on all utterances), with the variance of both levels of the design.

    labels [n, A] (or [n]); preds_a and preds_b [S, n, A] (or [S, n]): seed s of a pairs with seed s
    of b; speakers [n]: speaker codes (-1: none; such an utterance is a group of its own).
    - seeds: var(d_s) / S, as in a paired t-test. It holds everything that differs between seeds,
      the seeds' own errors on these test speakers included;
    - speakers: what the seeds share, which the seeds' variance cannot see (a method's systematic
      error on some speakers). The test speakers are resampled with replacement (`resamples` cluster
      bootstrap draws by numpy's default_rng(seed), one draw for every seed of both systems, scaled by
      G / (G - 1)); V_mean, the variance of the seed-mean difference, is shared + own / S, and V_one,
      the mean variance of a single seed's difference, is shared + own; so shared =
      (S V_mean - V_one) / (S - 1), at least 0.
    t = diff / sqrt(seeds + speakers); the two-sided p and the interval come from Student-t with S - 1
    degrees of freedom (the seed level has the fewer units, and its variance from 3 to 5 seeds is the
    uncertain part; a percentile bootstrap over so few seeds rejects a true null far too often). With
    fewer than two seeds p is None; with a zero variance p is 1.0 when diff is 0, else None."""
    labels, preds_a, preds_b = _as_systems("method_test", labels, preds_a, preds_b)
    if preds_a.shape[0] != preds_b.shape[0]:
        raise ValueError(f"method_test: {preds_a.shape[0]} seeds against {preds_b.shape[0]}; the seeds must pair up")
    groups = speaker_groups(speakers)
    if groups.shape != labels.shape[:1]:
        raise ValueError(f"method_test: {groups.size} speaker codes for {labels.shape[0]} utterances")
    n_seeds, n_groups = preds_a.shape[0], int(groups.max()) + 1
    preds = np.concatenate([preds_a, preds_b])

    def seed_diffs(counts: np.ndarray, by: np.ndarray | None = groups) -> np.ndarray:   # [R, S]
        ccc = resampled_ccc(labels, preds, counts, by).mean(axis=2)
        return ccc[:, :n_seeds] - ccc[:, n_seeds:]

    d = seed_diffs(np.ones((1, labels.shape[0])), None)[0]
    out = {"test": METHOD, "diff": float(d.mean()), "ci95": None, "se": None, "t": None, "df": None, "p": None,
           "seeds": int(n_seeds), "speakers": n_groups, "var_seeds": None, "var_speakers": None,
           "resamples": int(resamples), "seed": int(seed)}
    if n_seeds < 2:
        return out
    var_speakers = 0.0
    if n_groups > 1:
        boot = _resampled(seed_diffs, n_groups, resamples, seed) * math.sqrt(n_groups / (n_groups - 1))
        v_mean, v_one = boot.mean(axis=1).var(ddof=1), boot.var(axis=0, ddof=1).mean()
        var_speakers = max(0.0, float(n_seeds * v_mean - v_one) / (n_seeds - 1))
    var_seeds = float(d.var(ddof=1)) / n_seeds
    se = math.sqrt(var_seeds + var_speakers)
    out.update(var_seeds=var_seeds, var_speakers=var_speakers, df=n_seeds - 1)
    if se == 0:
        out["p"] = 1.0 if out["diff"] == 0 else None
        return out
    from scipy import stats

    t = out["diff"] / se
    half = float(stats.t.ppf(0.5 + confidence / 2, n_seeds - 1)) * se
    out.update(se=se, t=t, p=float(2 * stats.t.sf(abs(t), n_seeds - 1)),
               ci95=[out["diff"] - half, out["diff"] + half])
    return out


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
