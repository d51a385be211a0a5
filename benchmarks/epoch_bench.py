"""Epoch speed of the DeepEmoCluster trainer on the CPU, and fp32-vs-bf16 validation CCC.

    .venv/bin/python benchmarks/epoch_bench.py                      # everything, 600 utterances
    .venv/bin/python benchmarks/epoch_bench.py --variants gru,triplet --utterances 300 --skip-ccc
    .venv/bin/python benchmarks/epoch_bench.py --throughput-only    # fp32 / channels-last / bf16 fwd+bwd
    .venv/bin/python benchmarks/epoch_bench.py --table --table-epochs 10   # CCC per variant, FSL and SSL
    git worktree add /tmp/old main && .venv/bin/python benchmarks/epoch_bench.py --compare /tmp/old \
        --reference-setting --variants gru       # this checkout against another, epochs interleaved

Prints the machine (CPU model, cores, load), then:
1. throughput of one forward+backward pass of the network (m 62, C 11, batch 32 sentences = 352 chunks)
   in plain fp32, channels-last fp32, bf16 autocast and bf16 + channels-last;
2. per temporal variant (fully supervised, the reference's comparison setting): seconds per epoch,
   chunks/s, the split embed / k-means / train / validate, the k-means share of the epoch, the
   batch-assembly share of training time, and a reference-equivalent epoch (scaled to 300 Train +
   100 Validation utterances; compare it only with the reference run on the same machine);
3. validation CCC after a few epochs with precision fp32 and bf16 for a few seeds.
The synthetic corpus and its store are cached under --cache.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_machine import describe_machine  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from model.devices import usable_cpus  # noqa: E402



def machine() -> str:
    from model.devices import cpu_supports_bf16

    return f"{describe_machine()}; bf16 native: {cpu_supports_bf16()}; torch {torch.__version__}"


def ensure_store(cache: Path, utterances: int, unlabeled: int, seed: int) -> Path:
    from model.store_build import prepare_store
    from model.synth import synthesize_corpus

    corpus = cache / f"synth-{utterances}-{unlabeled}-{seed}"
    store = cache / f"synth-{utterances}-{unlabeled}-{seed}.store"
    if not (store / "meta.json").exists():
        print(f"building the synthetic corpus and store in {cache} ...", flush=True)
        if not (corpus / "Labels").exists():
            synthesize_corpus(corpus, utterances=utterances, unlabeled=unlabeled, seed=seed)
        prepare_store(corpus, store, progress=False)
    return store


ENCODER_SETTINGS = (("fp32", False, None), ("fp32 channels-last", True, None),
                    ("bf16", False, torch.bfloat16), ("bf16 channels-last", True, torch.bfloat16))


def encoder_throughput(width: float, m: int, C: int, batch: int, steps: int,
                       device: str = "cpu") -> dict[str, dict[str, float]]:
    """Chunks/s of one forward+backward+SGD step per setting (fp32, channels-last, bf16 autocast):
    median and best over `steps` interleaved steps after one warm-up step each."""
    from model.network import DeepEmoCluster

    dev = torch.device(device)
    x0 = torch.randn(batch * C, 1, m, 128, device=dev)
    settings = {}
    for name, channels_last, dtype in ENCODER_SETTINGS:
        torch.manual_seed(0)
        net = DeepEmoCluster("none", 10, m, C, 3, width).to(dev)
        if channels_last:
            net.encoder.conv.to(memory_format=torch.channels_last)
        x = x0.contiguous(memory_format=torch.channels_last) if channels_last else x0
        settings[name] = (net, torch.optim.SGD(net.parameters(), lr=1e-3), x, dtype, [])

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def step(net, opt, x, dtype) -> float:
        sync()
        t = time.perf_counter()
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            out = net(x)
        loss = out.logits.float().logsumexp(1).mean() + out.attributes.float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
        return time.perf_counter() - t

    for net, opt, x, dtype, _ in settings.values():   # warm-up (oneDNN / cuDNN primitive creation)
        step(net, opt, x, dtype)
    for _ in range(steps):                             # interleaved, so that load changes hit every setting
        for net, opt, x, dtype, times in settings.values():
            times.append(step(net, opt, x, dtype))
    return {name: {"chunks_per_s_median": batch * C / float(np.median(times)),
                   "chunks_per_s_best": batch * C / min(times), "steps": steps}
            for name, (*_, times) in settings.items()}


def throughput(width: float, m: int, C: int, batch: int, threads: int, steps: int) -> None:
    torch.set_num_threads(threads)
    print(f"\n== forward+backward throughput (m {m}, C {C}, {batch * C} chunks per batch, width {width}, "
          f"{threads} threads) ==")
    for name, r in encoder_throughput(width, m, C, batch, steps).items():
        print(f"{name:>20}: {r['chunks_per_s_median']:7.1f} chunks/s median, {r['chunks_per_s_best']:7.1f} best "
              f"({steps} interleaved steps)", flush=True)


def epoch_speed(store: Path, variants: list[str], args) -> None:
    from model.config import TrainConfig
    from model.trainer import Trainer

    print(f"\n== epoch speed (m {args.m}, C {args.C}, batch {args.batch}, width {args.width}, precision "
          f"{args.precision}, {'SSL' if args.ssl else 'FSL'}, {args.epochs} epoch(s)) ==")
    header = (f"{'variant':>11} {'epoch s':>8} {'chunks/s':>9} {'embed':>6} {'kmeans':>7} {'train':>7} "
              f"{'valid':>6} {'km %':>5} {'batch %':>7} {'ref-eq s':>8}")
    print(header)
    for variant in variants:
        cfg = TrainConfig(temporal=variant, chunk_frames=args.m, chunks_per_sentence=args.C, batch_size=args.batch,
                          width=args.width, precision=args.precision, num_threads=args.threads, seed=0,
                          unlabeled_pool=None if args.ssl else 0, epochs=args.epochs)
        trainer = Trainer(cfg, store)
        n_train, n_val = len(trainer.train_ids), len(trainer.val_ids)
        for _ in range(args.epochs):
            m = trainer.run_epoch()
            # the reference's setting: 300 Train + 100 Validation utterances per epoch, no SSL
            labeled = m["time_embed_s"] + m["time_kmeans_s"] + m["time_train_s"]
            if "time_ssl_train_s" in m:
                labeled -= m["time_ssl_train_s"]
            ref_eq = labeled * 300 / n_train + m["time_validate_s"] * 100 / n_val
            print(f"{variant:>11} {m['time_epoch_s']:8.1f} {m['chunks_per_s']:9.1f} {m['time_embed_s']:6.1f} "
                  f"{m['time_kmeans_s']:7.2f} {m['time_train_s']:7.1f} {m['time_validate_s']:6.1f} "
                  f"{100 * m['time_kmeans_s'] / m['time_epoch_s']:5.1f} "
                  f"{100 * m['time_batch_s'] / m['time_train_s']:7.1f} {ref_eq:8.1f}", flush=True)
        print(f"{'':>11} ({n_train} Train, {n_val} Validation, {len(trainer.pool_ids)} SSL utterances; "
              f"load {os.getloadavg()[0]:.2f})", flush=True)


def add_setting_arguments(p) -> None:
    """The store and training-setting options of the side-by-side benchmarks (trial_bench, cv_bench): the
    reference's timing setting by default (width 1.0, m 62, C 11, K 10, batch 32, GRU)."""
    p.add_argument("--store", type=Path, help="a feature store (default: the reference's timing setting, synthetic)")
    p.add_argument("--utterances", type=int, default=0,
                   help="instead of the reference setting: a synthetic store of this many utterances (quick runs)")
    p.add_argument("--cache", default="/tmp/deepemocluster-bench", help="where the synthetic store is kept")
    p.add_argument("--threads", type=int, default=0, help="torch threads (and a trial's CPUs; 0 = all usable)")
    p.add_argument("--temporal", default="gru")
    p.add_argument("--m", type=int, default=62)
    p.add_argument("--C", type=int, default=11)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])


def setting_store(args) -> Path:
    """The store add_setting_arguments' options name: --store, a synthetic one of --utterances, or the reference's."""
    if args.store:
        return args.store
    if args.utterances:
        return ensure_store(Path(args.cache), args.utterances, 0, 0)
    return reference_setting_store(Path(args.cache))


def reference_setting_store(cache: Path) -> Path:
    """A store of exactly 300 Train + 100 Validation utterances (the reference's timing setting), FSL."""
    import csv

    from model.store_build import prepare_store
    from model.synth import synthesize_corpus

    store = cache / "reference-300-100.store"
    if (store / "meta.json").exists():
        return store
    source = cache / "synth-700-0-0"
    if not (source / "Labels").exists():
        synthesize_corpus(source, utterances=700, unlabeled=0, seed=0)
    corpus = cache / "reference-300-100"
    (corpus / "Labels").mkdir(parents=True, exist_ok=True)
    if not (corpus / "Audio").exists():
        (corpus / "Audio").symlink_to(source / "Audio")
    with open(source / "Labels" / "labels_consensus.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keep = {"Train": 300, "Validation": 100}
    picked = []
    # Validation first, then Test1 utterances (other speakers than Train, like Validation) fill it to 100
    for split in ("Train", "Validation", "Test1"):
        for row in rows:
            role = "Validation" if split == "Test1" else split
            if row["Split_Set"] == split and keep[role] > 0:
                keep[role] -= 1
                picked.append({**row, "Split_Set": role})
    if any(keep.values()):
        raise RuntimeError(f"the synthetic corpus has too few utterances for 300 Train + 100 Validation: {keep}")
    with open(corpus / "Labels" / "labels_consensus.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(picked)
    prepare_store(corpus, store, progress=False)
    return store


# Runs in a fresh process with a checkout's model/ first on sys.path: only the public Trainer API, so that
# it times old checkouts too. argv: config JSON, store, epochs.
EPOCH_WORKER = """
import json, sys, time
try:   # an entry point's choice since issue 20; older checkouts' Trainer applied it itself (or had none)
    from model.cpu_memory import keep_freed_blocks_in_malloc
except ImportError:
    pass
else:
    keep_freed_blocks_in_malloc()
from model.config import TrainConfig
from model.trainer import Trainer
cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
start = time.perf_counter()
trainer = Trainer(cfg, sys.argv[2])
setup = time.perf_counter() - start
keys = ("time_epoch_s", "time_embed_s", "time_kmeans_s", "time_train_s", "time_validate_s", "val_ccc_mean")
epochs = []
for _ in range(int(sys.argv[3])):
    cpu = time.process_time()
    m = trainer.run_epoch()
    epochs.append({**{k: m[k] for k in keys if k in m}, "cpu_s": time.process_time() - cpu})
print("RESULT " + json.dumps({"setup_s": setup, "epochs": epochs}))
"""


def time_checkout(checkout: Path, config: dict, store: Path, epochs: int) -> dict:
    """Train `epochs` epochs with `checkout`'s code in a new process; its per-epoch times and CCC."""
    import json
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run([sys.executable, "-c", EPOCH_WORKER, json.dumps(config), str(store), str(epochs)],
                         cwd=checkout, env=env, capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{checkout}: the epoch worker failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def compare_checkouts(other: Path, store: Path, args) -> None:
    """Epochs of this checkout and `other` interleaved (ABAB..., the order alternating by round) on one store."""
    here = Path(__file__).resolve().parents[1]
    seeds = [int(s) for s in args.compare_seeds.split(",")]
    config = {"temporal": args.variants.split(",")[0], "chunk_frames": args.m, "chunks_per_sentence": args.C,
              "batch_size": args.batch, "width": args.width, "precision": args.precision, "num_threads": args.threads,
              "num_clusters": args.k, "unlabeled_pool": None if args.ssl else 0, "epochs": args.compare_epochs}
    print(f"\n== this checkout ({here}) against {other}, interleaved; {config}, seeds {seeds}, "
          f"{args.compare_epochs} epochs per run ==")
    print(f"{'seed':>4} {'code':>5} {'epoch s (each)':>24} {'steady s':>8} {'CPU s':>7} {'best CCC':>8} {'load':>5}")
    results: dict[str, list[dict]] = {"this": [], "other": []}
    for i, seed in enumerate(seeds):
        order = [("this", here), ("other", other)]
        for name, checkout in (order if i % 2 == 0 else order[::-1]):
            r = time_checkout(checkout, {**config, "seed": seed}, store, args.compare_epochs)
            times = [e["time_epoch_s"] for e in r["epochs"]]
            r["steady_s"] = float(np.median(times[1:] if len(times) > 1 else times))
            cpu = [e["cpu_s"] for e in r["epochs"]]
            r["steady_cpu_s"] = float(np.median(cpu[1:] if len(cpu) > 1 else cpu))
            r["best_ccc"] = max(e["val_ccc_mean"] for e in r["epochs"])
            results[name].append(r)
            print(f"{seed:>4} {name:>5} {' '.join(f'{t:.1f}' for t in times):>24} {r['steady_s']:8.1f} "
                  f"{r['steady_cpu_s']:7.1f} {r['best_ccc']:8.3f} {os.getloadavg()[0]:5.1f}", flush=True)
    steady = {k: float(np.median([r["steady_s"] for r in v])) for k, v in results.items()}
    first = {k: float(np.median([r["epochs"][0]["time_epoch_s"] for r in v])) for k, v in results.items()}
    cpu = {k: float(np.median([r["steady_cpu_s"] for r in v])) for k, v in results.items()}
    ccc = {k: [r["best_ccc"] for r in v] for k, v in results.items()}
    print(f"median steady epoch (epochs after the first): this {steady['this']:.1f} s, other {steady['other']:.1f} s "
          f"-> this checkout's throughput {steady['other'] / steady['this']:.2f}x the other's")
    print(f"median steady epoch CPU time (this process; less sensitive to other jobs' load): this {cpu['this']:.1f} s, "
          f"other {cpu['other']:.1f} s -> {cpu['other'] / cpu['this']:.2f}x")
    print(f"median first epoch: this {first['this']:.1f} s, other {first['other']:.1f} s "
          f"-> {first['other'] / first['this']:.2f}x")
    for k in ("this", "other"):
        print(f"best val_ccc_mean over seeds, {k}: {np.mean(ccc[k]):.3f} +- {np.std(ccc[k]):.3f} "
              f"({', '.join(f'{c:.3f}' for c in ccc[k])})")


def ccc_comparison(store: Path, args) -> None:
    from model.config import TrainConfig
    from model.trainer import Trainer

    seeds = [int(s) for s in args.ccc_seeds.split(",")]
    print(f"\n== validation CCC after {args.ccc_epochs} epochs, fp32 vs bf16 ({args.ccc_variant}, seeds {seeds}) ==")
    print(f"{'seed':>5} {'precision':>9} {'best mean':>9} {'best act':>8} {'last act':>8} {'s/epoch':>8}")
    precisions = args.ccc_precisions.split(",")
    results: dict[str, list[float]] = {p: [] for p in precisions}
    for seed in seeds:
        for precision in precisions:
            cfg = TrainConfig(temporal=args.ccc_variant, chunk_frames=args.m, chunks_per_sentence=args.C,
                              batch_size=args.batch, width=args.width, precision=precision,
                              num_threads=args.threads, seed=seed, unlabeled_pool=0, epochs=args.ccc_epochs)
            trainer = Trainer(cfg, store)
            history = [trainer.run_epoch() for _ in range(args.ccc_epochs)]
            best = max(history, key=lambda m: m["val_ccc_mean"])
            results[precision].append(best["val_ccc_mean"])
            print(f"{seed:>5} {precision:>9} {best['val_ccc_mean']:9.3f} {max(m['val_ccc_act'] for m in history):8.3f} "
                  f"{history[-1]['val_ccc_act']:8.3f} {np.mean([m['time_epoch_s'] for m in history]):8.1f}",
                  flush=True)
    for precision, values in results.items():
        print(f"{precision}: best val_ccc_mean {np.mean(values):.3f} +- {np.std(values):.3f} over {len(values)} seeds")


def ccc_table(store: Path, variants: list[str], args) -> None:
    from model.config import TrainConfig
    from model.trainer import Trainer

    print(f"\n== validation CCC per variant after {args.table_epochs} epochs, FSL and SSL (m {args.m}, C {args.C}, "
          f"batch {args.batch}, width {args.width}, precision {args.precision}, seed 0; best epoch by mean CCC) ==")
    print(f"{'variant':>11} {'mode':>4} {'act':>6} {'dom':>6} {'val':>6} {'mean':>6} {'best ep':>7} {'s/epoch':>8}")
    for variant in variants:
        for mode in args.table_modes.split(","):
            cfg = TrainConfig(temporal=variant, chunk_frames=args.m, chunks_per_sentence=args.C,
                              batch_size=args.batch, width=args.width, precision=args.precision,
                              num_threads=args.threads, seed=0, unlabeled_pool=None if mode == "SSL" else 0,
                              epochs=args.table_epochs)
            trainer = Trainer(cfg, store)
            history = [trainer.run_epoch() for _ in range(cfg.epochs)]
            best = max(history, key=lambda m: m["val_ccc_mean"])
            print(f"{variant:>11} {mode:>4} {best['val_ccc_act']:6.3f} {best['val_ccc_dom']:6.3f} "
                  f"{best['val_ccc_val']:6.3f} {best['val_ccc_mean']:6.3f} {best['epoch']:7d} "
                  f"{np.mean([m['time_epoch_s'] for m in history]):8.1f}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--utterances", type=int, default=600, help="labelled utterances of the synthetic corpus")
    p.add_argument("--unlabeled", type=int, default=200, help="unlabeled utterances (used with --ssl)")
    p.add_argument("--store", help="use this feature store instead of the synthetic one")
    p.add_argument("--cache", default="/tmp/deepemocluster-bench", help="where the synthetic store is kept")
    p.add_argument("--variants", default="none,gru,cnn,transformer,triplet")
    p.add_argument("--epochs", type=int, default=1, help="epochs per variant for the speed table")
    p.add_argument("--m", type=int, default=62)
    p.add_argument("--C", type=int, default=11)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all usable cores)")
    p.add_argument("--ssl", action="store_true", help="include the SSL stage in the speed table")
    p.add_argument("--steps", type=int, default=5, help="timed steps per throughput setting")
    p.add_argument("--throughput-only", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-ccc", action="store_true")
    p.add_argument("--ccc-variant", default="gru")
    p.add_argument("--ccc-seeds", default="0,1,2")
    p.add_argument("--ccc-epochs", type=int, default=3)
    p.add_argument("--ccc-precisions", default="fp32,bf16")
    p.add_argument("--compare", metavar="CHECKOUT",
                   help="time this checkout against another one (e.g. a `git worktree` of an older commit), epochs "
                        "interleaved on the same store; the config is --variants' first, --m, --C, --batch, "
                        "--width, --k, --precision, --threads, --ssl")
    p.add_argument("--compare-seeds", default="0,1,2", help="one run per seed and checkout")
    p.add_argument("--compare-epochs", type=int, default=2, help="epochs per run (the first includes warm-up)")
    p.add_argument("--reference-setting", action="store_true",
                   help="use a store of exactly 300 Train + 100 Validation utterances (the reference's timing setting)")
    p.add_argument("--k", type=int, default=10, help="num_clusters")
    p.add_argument("--table", action="store_true",
                   help="only the table of validation CCC per variant, FSL and SSL (docs/training.md)")
    p.add_argument("--table-epochs", type=int, default=10)
    p.add_argument("--table-modes", default="FSL,SSL", help="FSL, SSL or both (comma-separated)")
    args = p.parse_args()

    from model.cpu_memory import keep_freed_blocks_in_malloc

    keep_freed_blocks_in_malloc()   # as `python -m tuner train` does (an entry point's choice)
    threads = args.threads or usable_cpus()
    args.threads = threads
    print("machine:", machine(), flush=True)
    if not args.skip_throughput and not args.table and not args.compare:
        throughput(args.width, args.m, args.C, args.batch, threads, args.steps)
    if args.throughput_only:
        return 0
    if args.store:
        store = Path(args.store)
    elif args.reference_setting:
        store = reference_setting_store(Path(args.cache))
    else:
        store = ensure_store(Path(args.cache), args.utterances, args.unlabeled, 0)
    if args.compare:
        compare_checkouts(Path(args.compare).resolve(), store, args)
        return 0
    if args.table:
        ccc_table(store, [v for v in args.variants.split(",") if v], args)
        return 0
    if not args.skip_speed:
        epoch_speed(store, [v for v in args.variants.split(",") if v], args)
    if not args.skip_ccc:
        ccc_comparison(store, args)
    print("\nload average at the end:", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
