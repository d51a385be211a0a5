"""Selection that generalises, on a small synthetic corpus with few speakers (issue 10, §5).

    .venv/bin/python benchmarks/selection_bench.py --part rank      # single split vs k-fold CV
    .venv/bin/python benchmarks/selection_bench.py --part transfer  # fine-tune a published model vs scratch
    .venv/bin/python benchmarks/selection_bench.py --part specaug   # SpecAugment on vs off
    .venv/bin/python benchmarks/selection_bench.py --part report    # the tables from the results file

The corpus: `synth --utterances 300 --speakers 12 --unlabeled 0` (8 Train, 2 Validation and 2 Test1
speakers: two speakers per evaluation split, like a small acted corpus). Every run is fully
supervised, width 0.25, m 32, C 4, batch 8, 4 epochs, precision auto, 1 thread; results are appended to RESULTS (one JSON line per run, a
finished run is skipped when the script is started again), and `--part report` prints the tables.

rank: for each of CONFIGS, (a) the single split: train on Train, score = best validation CCC mean,
test = CCC of the best model on Test1; (b) `cv_folds=3` on Train + Validation grouped by speaker:
score = best mean-over-folds validation CCC, test = CCC of the fold ensemble on Test1. Reported:
Spearman's rank correlation between score and test for (a) and (b), and between the CV score and
the single-split model's test CCC.
transfer: the published act model (imported) vs a fresh network, same config (temporal none, width
1.0, m 62, C 11, reference features with the published normalisation terms), 2 epochs, 2 seeds.
specaug: gru, K 10 with and without SpecAugment (specaug_prob 0.5, 2+2 masks of up to 16 bands / 8
frames), 3 seeds.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_machine import describe_machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference" / "deepemoclusters-msp-podcast-v1.6"
REFERENCE_ACT = REFERENCE / "trained_models" / "Vgg16DeepEmoCluster_epoch50_batch64_10clusters_Act.pth.tar"
BASE = dict(width=0.25, batch_size=8, unlabeled_pool=0, num_threads=1, epochs=4, seed=0, chunk_frames=32,
            chunks_per_sentence=4)
# 12 configurations that differ in ways that matter (temporal module, K, learning rate, chunking)
CONFIGS = [
    dict(temporal="none", num_clusters=10),
    dict(temporal="none", num_clusters=30, lr_adam=1e-3),
    dict(temporal="gru", num_clusters=10),
    dict(temporal="gru", num_clusters=5, lr_adam=2e-4),
    dict(temporal="gru", num_clusters=20, chunk_frames=24, chunks_per_sentence=8),
    dict(temporal="transformer", num_clusters=10),
    dict(temporal="transformer", num_clusters=30, lr_adam=1e-3),
    dict(temporal="cnn", num_clusters=10),
    dict(temporal="cnn", num_clusters=20, lr_adam=2e-4),
    dict(temporal="triplet", num_clusters=10),
    dict(temporal="triplet", num_clusters=5, triplet_margin=0.5, chunk_frames=24, chunks_per_sentence=8),
    dict(temporal="gru", num_clusters=10, optimizer="adam", lr_adam=1e-3),
]
SEEDS = (0, 1, 2)
TRANSFER_SEEDS = (0, 1)


def corpus_store(cache: Path, features: str = "logmel") -> Path:
    """The small corpus and its store (logmel, or reference features with the published terms), built once."""
    from model.store_build import prepare_store
    from model.synth import synthesize_corpus

    corpus = cache / "synth-300-12spk"
    if not (corpus / "Labels").exists():
        synthesize_corpus(corpus, utterances=300, unlabeled=0, speakers=12, seed=7)
    store = cache / f"synth-300-12spk.{features}.store"
    prepare_store(corpus, store, features=features, norm_terms=REFERENCE / "NormTerm" if features == "reference" else None,
                  workers=1, progress=False)
    return store


def done_keys(results: Path) -> set[str]:
    if not results.exists():
        return set()
    return {json.loads(line)["key"] for line in results.read_text().splitlines() if line.strip()}


def train_and_test(config: dict, store: Path, work: Path) -> dict:
    """Train `config`; its selection score, best epoch, test CCC (an ensemble for cv_folds) and time."""
    from model.config import TrainConfig
    from model.checkpoint import best_model_name
    from model.cv import make_trainer
    from model.inference import evaluate_store

    start = time.perf_counter()
    cfg = TrainConfig.from_dict(config)
    trainer = make_trainer(cfg, str(store))
    summary = trainer.fit()
    model = work / best_model_name(cfg)
    trainer.save_best_model(model)
    test = evaluate_store(model, str(store), "Test1")
    return {"score": summary["best_val_ccc_mean"], "best_epoch": summary["best_epoch"],
            "test_ccc_mean": test["ccc_mean"], **{f"test_ccc_{a}": test[f"ccc_{a}"] for a in cfg.attributes},
            "seconds": time.perf_counter() - start}


def record(results: Path, key: str, row: dict) -> None:
    with open(results, "a") as f:
        f.write(json.dumps({"key": key, **row}) + "\n")
    print(json.dumps({"key": key, **{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}}),
          flush=True)


def part_rank(args, results: Path) -> None:
    store = corpus_store(args.cache)
    done = done_keys(results)
    shard, shards = map(int, args.shard.split("/"))
    for i, changes in enumerate(CONFIGS):
        if i % shards != shard:
            continue
        for mode, extra in (("single", {}), (f"cv{args.folds}", {"cv_folds": args.folds})):
            key = f"rank/{i}/{mode}"
            if key in done:
                continue
            config = {**BASE, "epochs": args.epochs, **changes, **extra}
            row = train_and_test(config, store, args.cache / "models" / key.replace("/", "_"))
            record(results, key, {"config": changes, "mode": mode, **row})


def part_transfer(args, results: Path) -> None:
    from model.model_file import save_model
    from model.reference import import_reference

    store = corpus_store(args.cache, "reference")
    model = args.cache / "reference_act.pt"
    if not model.exists():
        network, info = import_reference(REFERENCE_ACT, REFERENCE / "NormTerm", "act")
        save_model(model, network, info)
    done = done_keys(results)
    base = {**BASE, "epochs": args.transfer_epochs, "temporal": "none", "width": 1.0, "chunk_frames": 62,
            "chunks_per_sentence": 11}
    for seed in TRANSFER_SEEDS:
        for mode, extra in (("scratch", {}), ("finetune", {"init_model": str(model)})):
            key = f"transfer/{mode}/{seed}"
            if key in done:
                continue
            row = train_and_test({**base, **extra, "seed": seed}, store, args.cache / "models" / key.replace("/", "_"))
            record(results, key, {"mode": mode, "seed": seed, **row})


def part_specaug(args, results: Path) -> None:
    store = corpus_store(args.cache)
    done = done_keys(results)
    base = {**BASE, "epochs": args.epochs, "temporal": "gru", "num_clusters": 10}
    for seed in SEEDS:
        for mode, extra in (("off", {}), ("on", {"specaug_prob": 0.5})):
            key = f"specaug/{mode}/{seed}"
            if key in done:
                continue
            row = train_and_test({**base, **extra, "seed": seed}, store, args.cache / "models" / key.replace("/", "_"))
            record(results, key, {"mode": mode, "seed": seed, **row})


def report(results: Path, folds: int) -> None:
    import numpy as np
    from scipy.stats import spearmanr

    rows = {r["key"]: r for r in map(json.loads, results.read_text().splitlines()) if r}
    print(f"results: {results} ({len(rows)} runs)\n")
    single = [rows.get(f"rank/{i}/single") for i in range(len(CONFIGS))]
    cv = [rows.get(f"rank/{i}/cv{folds}") for i in range(len(CONFIGS))]
    both = [(s, c) for s, c in zip(single, cv) if s and c]
    if both:
        print("| # | config | single: val score | single: test CCC | CV: mean-fold score | CV ensemble: test CCC |")
        print("|---|---|---|---|---|---|")
        for i, (s, c) in enumerate(zip(single, cv)):
            if s and c:
                desc = ", ".join(f"{k} {v}" for k, v in CONFIGS[i].items())
                print(f"| {i} | {desc} | {s['score']:.3f} | {s['test_ccc_mean']:.3f} | {c['score']:.3f} | "
                      f"{c['test_ccc_mean']:.3f} |")
        s_score, s_test = [s["score"] for s, _ in both], [s["test_ccc_mean"] for s, _ in both]
        c_score, c_test = [c["score"] for _, c in both], [c["test_ccc_mean"] for _, c in both]
        print(f"\nSpearman over {len(both)} configurations:")
        print(f"- single-split validation score vs its model's test CCC: {spearmanr(s_score, s_test)[0]:+.3f}")
        print(f"- {folds}-fold CV score vs the CV ensemble's test CCC:      {spearmanr(c_score, c_test)[0]:+.3f}")
        print(f"- {folds}-fold CV score vs the single-split model's test CCC: {spearmanr(c_score, s_test)[0]:+.3f}")
        print(f"- pick by single split: config {int(np.argmax(s_score))}, its test CCC {s_test[int(np.argmax(s_score))]:.3f}; "
              f"pick by CV: config {int(np.argmax(c_score))}, its ensemble test CCC {c_test[int(np.argmax(c_score))]:.3f}, "
              f"its single-split model's {s_test[int(np.argmax(c_score))]:.3f}; best possible single-split test CCC "
              f"{max(s_test):.3f}")
        print(f"- time: single {sum(s['seconds'] for s, _ in both):.0f} s, CV {sum(c['seconds'] for _, c in both):.0f} s\n")
    for part, modes in (("transfer", ("scratch", "finetune")), ("specaug", ("off", "on"))):
        got = [rows[k] for k in rows if k.startswith(part + "/")]
        if not got:
            continue
        print(f"| {part} | seeds | test CCC mean (per seed) | test act | test dom | test val | val score (per seed) |")
        print("|---|---|---|---|---|---|---|")
        for mode in modes:
            rs = sorted((r for r in got if r["mode"] == mode), key=lambda r: r["seed"])
            if not rs:
                continue
            t = [r["test_ccc_mean"] for r in rs]
            print(f"| {mode} | {len(rs)} | {np.mean(t):.3f} ({', '.join(f'{x:.3f}' for x in t)}) | "
                  + " | ".join(f"{np.mean([r[f'test_ccc_{a}'] for r in rs]):.3f}" for a in ("act", "dom", "val"))
                  + " | " + ", ".join(f"{r['score']:.3f}" for r in rs) + " |")
        print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("rank", "transfer", "specaug", "report"), required=True)
    parser.add_argument("--cache", type=Path, default=REPO / "data" / "selection_bench")
    parser.add_argument("--shard", default="0/1", help="rank: run configurations i with i %% n == k (k/n)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (rank, specaug)")
    parser.add_argument("--transfer-epochs", type=int, default=2)
    parser.add_argument("--folds", type=int, default=3)
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    results = args.cache / "results.jsonl"
    if args.part == "report":
        report(results, args.folds)
        return 0
    print(describe_machine(), flush=True)
    from model.cpu_memory import keep_freed_blocks_in_malloc

    keep_freed_blocks_in_malloc()   # as `python -m tuner train` does (an entry point's choice)
    {"rank": part_rank, "transfer": part_transfer, "specaug": part_specaug}[args.part](args, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
