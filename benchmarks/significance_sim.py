"""The confirmation's tests on simulated comparisons: how often each rejects a true null and how often
it finds a real difference (docs/search.md, "Confirm: seeds, intervals and significance").

One simulated comparison: a test set of UTTERANCES utterances from SPEAKERS speakers, labels
y = speaker part + utterance part; two methods A and B, each with a bias per speaker (its systematic
error on that speaker, drawn once per method and shared by its seeds) and `seeds` trained models
whose expected CCC is drawn around the method's mean with sd SEED_SD (the seed-to-seed sd); a
model's predictions are y + the method's speaker bias + noise of the sd that gives that CCC. Under
the null both methods have the same mean CCC; with `effect` A's is `effect` seed-sds higher.

    python benchmarks/significance_sim.py [--comparisons 400] [--seeds 3 5] [--speaker-bias 0.4]

prints per number of seeds the share of comparisons each test calls significant at alpha 0.05: the
method-level test (tuner.answers.confirm.significance.method_test, the one confirm stars), the paired t over seeds,
the paired bootstrap over utterances, a plain two-level percentile bootstrap (seed pairs, then
speakers within each drawn seed) and the method test's variance with Satterthwaite's df.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

UTTERANCES, SPEAKERS = 1500, 50
SPEAKER_VAR, UTTERANCE_VAR = 0.5, 1.0      # label variance between and within speakers
MEAN_CCC, SEED_SD = 0.55, 0.05
SPEAKER_BIAS = 0.4                         # sd of a method's bias per speaker
ALPHA = 0.05


def simulate(rng: np.random.Generator, seeds: int, effect: float = 0.0, speaker_bias: float = SPEAKER_BIAS,
             utterances: int = UTTERANCES, speakers: int = SPEAKERS):
    """One comparison: (labels [n], preds_a [seeds, n], preds_b [seeds, n], speaker codes [n]);
    A's expected CCC is `effect` seed-sds above B's."""
    spk = np.arange(utterances) % speakers
    y = rng.normal(0, SPEAKER_VAR ** 0.5, speakers)[spk] + rng.normal(0, UTTERANCE_VAR ** 0.5, utterances)
    var_y = SPEAKER_VAR + UTTERANCE_VAR
    systems = []
    for mean in (MEAN_CCC + effect * SEED_SD, MEAN_CCC):
        bias = rng.normal(0, speaker_bias, speakers)[spk]
        target = np.clip(mean + rng.normal(0, SEED_SD, seeds), 0.05, 0.95)
        # CCC of y + bias + noise(sd) is 2 var_y / (2 var_y + bias var + sd^2)
        noise_sd = np.sqrt(np.maximum(2 * var_y / target - 2 * var_y - speaker_bias ** 2, 1e-6))
        systems.append(y + bias + noise_sd[:, None] * rng.normal(0, 1, (seeds, utterances)))
    return y, systems[0], systems[1], spk


def rejection_rate(seeds: int, effect: float, comparisons: int, seed: int = 0, resamples: int = 500,
                   speaker_bias: float = SPEAKER_BIAS) -> float:
    """Share of `comparisons` simulated comparisons that the method-level test calls significant."""
    from tuner.answers.confirm.significance import method_test

    rng = np.random.default_rng(seed)
    hits = 0
    for k in range(comparisons):
        y, a, b, spk = simulate(rng, seeds, effect, speaker_bias)
        hits += method_test(y, a, b, spk, resamples=resamples, seed=k)["p"] < ALPHA
    return hits / comparisons


def two_level_percentile(y, a, b, spk, rng, resamples: int) -> float:
    """p of a plain two-level percentile bootstrap: seed pairs with replacement, then speakers within
    each drawn seed (its own speaker draw)."""
    from tuner.answers.confirm.significance import resampled_ccc

    seeds, groups = a.shape[0], int(spk.max()) + 1
    preds = np.concatenate([a, b])[..., None]
    counts = rng.multinomial(groups, np.full(groups, 1 / groups), size=resamples * seeds)
    ccc = resampled_ccc(y[:, None], preds, counts, spk)[..., 0].reshape(resamples, seeds, 2 * seeds)
    pick = rng.integers(0, seeds, size=(resamples, seeds))
    rows = np.arange(resamples)[:, None], np.arange(seeds)[None]
    boot = (ccc[rows + (pick,)] - ccc[rows + (pick + seeds,)]).mean(axis=1)
    return min(1.0, 2 * min((np.sum(boot <= 0) + 1), (np.sum(boot >= 0) + 1)) / (resamples + 1))


def all_tests(seeds: int, effect: float, comparisons: int, speaker_bias: float, resamples: int) -> dict[str, float]:
    """Rejection rate of every test over the same simulated comparisons."""
    from scipy import stats

    from tuner.answers.confirm.significance import method_test, paired_bootstrap, paired_t_test

    rng = np.random.default_rng(1)
    hits: dict[str, int] = {}
    for k in range(comparisons):
        y, a, b, spk = simulate(rng, seeds, effect, speaker_bias)
        m = method_test(y, a, b, spk, resamples=resamples, seed=k)
        v_seed, v_spk = m["var_seeds"], m["var_speakers"]
        df = (v_seed + v_spk) ** 2 / (v_seed ** 2 / (seeds - 1) + v_spk ** 2 / (m["speakers"] - 1))
        p = {"method test (S-1 df)": m["p"],
             "method variance, Satterthwaite df": 2 * stats.t.sf(abs(m["t"]), df),
             "paired t over seeds": paired_t_test(*seed_cccs(y, a, b))["p"],
             "bootstrap over utterances": paired_bootstrap(y, a, b, resamples=resamples, seed=k)["p"],
             "two-level percentile bootstrap": two_level_percentile(y, a, b, spk, rng, resamples)}
        for name, value in p.items():
            hits[name] = hits.get(name, 0) + (value is not None and value < ALPHA)
    return {name: n / comparisons for name, n in hits.items()}


def seed_cccs(y, a, b) -> tuple[np.ndarray, np.ndarray]:
    """Each seed's CCC on all utterances, of A and of B."""
    from tuner.answers.confirm.significance import resampled_ccc

    ccc = resampled_ccc(y[:, None], np.concatenate([a, b])[..., None], np.ones((1, y.size)))[0, :, 0]
    return ccc[:a.shape[0]], ccc[a.shape[0]:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comparisons", type=int, default=400)
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--effect", type=float, default=2.0, help="the real difference, in seed-sds")
    parser.add_argument("--speaker-bias", type=float, default=SPEAKER_BIAS)
    parser.add_argument("--resamples", type=int, default=500)
    args = parser.parse_args()
    print(f"{args.comparisons} comparisons per cell; {UTTERANCES} utterances, {SPEAKERS} speakers, seed sd "
          f"{SEED_SD}, speaker bias sd {args.speaker_bias}; rejection rate at alpha {ALPHA}")
    for seeds in args.seeds:
        for effect in (0.0, args.effect):
            start = time.perf_counter()
            rates = all_tests(seeds, effect, args.comparisons, args.speaker_bias, args.resamples)
            what = "null" if effect == 0 else f"A +{effect:g} seed-sd"
            print(f"{seeds} seeds, {what} ({time.perf_counter() - start:.0f} s): "
                  + "; ".join(f"{k} {v:.3f}" for k, v in rates.items()), flush=True)


if __name__ == "__main__":
    main()
