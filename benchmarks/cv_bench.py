"""Where a cross-validated trial's epoch goes: one k-fold CV epoch against k single-split epochs.

Both on one store, in this process, epochs interleaved (the order alternating by round): a
CVTrainer (cv_folds k, speaker-grouped folds of Train + Validation) runs one epoch, i.e. one epoch of
each of its k fold models; a Trainer on the store's own split runs k epochs. Per run it prints the
parts of the epoch (the per-fold k-means embedding of the training set, k-means, training, batch
assembly, validation; summed over folds or epochs), the checkpoint a trial writes after each epoch,
the wall and CPU time, and the sentences trained and validated.

    .venv/bin/python benchmarks/cv_bench.py --rounds 3            # the reference's timing setting
    .venv/bin/python benchmarks/cv_bench.py --utterances 60 --width 0.125 --m 24 --C 4 --batch 8 --k 3

CPU seconds (this process) are the figure to read on a shared machine; wall seconds need an idle one.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_machine import describe_machine  # noqa: E402
from epoch_bench import add_setting_arguments, setting_store  # noqa: E402

PARTS = ("time_embed_s", "time_kmeans_s", "time_train_s", "time_batch_s", "time_validate_s")


def timed_epochs(trainer, epochs: int) -> dict[str, float]:
    """`epochs` epochs of `trainer` and then a trial's checkpoint: seconds per part, summed."""
    wall, cpu = time.perf_counter(), time.process_time()
    runs = [trainer.run_epoch() for _ in range(epochs)]
    out = {part: sum(m[part] for m in runs) for part in PARTS}
    models = getattr(trainer, "folds", [trainer])   # a CVTrainer's fold Trainers
    out["sentences"] = (f"{epochs * sum(len(t.train_ids) for t in models)}/"
                        f"{epochs * sum(len(t.val_ids) for t in models)}")
    with tempfile.TemporaryDirectory(prefix="cv-bench-") as directory:
        start = time.perf_counter()
        trainer.save_checkpoint(directory)
        out["checkpoint_s"] = time.perf_counter() - start
    out["wall_s"], out["cpu_s"] = time.perf_counter() - wall, time.process_time() - cpu
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="rounds of (one CV epoch, k single-split epochs)")
    p.add_argument("--folds", type=int, default=3)
    add_setting_arguments(p)
    args = p.parse_args()

    from model.config import TrainConfig
    from model.cpu_memory import keep_freed_blocks_in_malloc
    from model.cv import CVTrainer
    from model.trainer import Trainer

    keep_freed_blocks_in_malloc()   # as `python -m tuner train` and a trial do
    store = setting_store(args)
    config = TrainConfig(temporal=args.temporal, chunk_frames=args.m, chunks_per_sentence=args.C,
                         num_clusters=args.k, batch_size=args.batch, width=args.width, precision=args.precision,
                         num_threads=args.threads, unlabeled_pool=0, seed=0)
    runs = {f"{args.folds}-fold CV, 1 epoch": (CVTrainer(config.replace(cv_folds=args.folds), store), 1),
            f"single split, {args.folds} epochs": (Trainer(config, store), args.folds)}
    print(describe_machine(), flush=True)
    print(f"store {store}; width {args.width}, m {args.m}, C {args.C}, K {args.k}, batch {args.batch}, "
          f"{args.temporal}; seconds summed over the folds / epochs", flush=True)
    print(f"{'round':>5} {'run':>24} {'wall':>6} {'CPU':>6} {'embed':>6} {'kmeans':>6} {'train':>6} {'batch':>6} "
          f"{'valid':>6} {'ckpt':>5} {'train/valid sentences':>21}", flush=True)
    names = list(runs)
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            trainer, epochs = runs[name]
            t = timed_epochs(trainer, epochs)
            print(f"{r:>5} {name:>24} {t['wall_s']:6.1f} {t['cpu_s']:6.1f} {t['time_embed_s']:6.1f} "
                  f"{t['time_kmeans_s']:6.2f} {t['time_train_s']:6.1f} {t['time_batch_s']:6.2f} "
                  f"{t['time_validate_s']:6.1f} {t['checkpoint_s']:5.2f} {t['sentences']:>21}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
