"""GPU readiness check: one command, at most 8 minutes on one GPU, one JSON report.

    python benchmarks/gpu_check.py --out gpu_check.json          # on a GPU node (the `gpu` extra installed)
    python benchmarks/gpu_check.py --cpu --out cpu_check.json    # the same parts, scaled down, on the CPU

Parts (each in its own process with a time cap; a failure or timeout is recorded and the next part runs):
  environment  GPU, driver, CUDA, cuDNN, torch and faiss builds (which faiss distribution, GPUs it sees)
  kmeans       faiss k-means at MSP-Podcast scale (1.65 M x 256, K 30, 20 iterations) on the GPU, against
               the CPU at a tenth of that; both the project's k-means (model.clustering.kmeans: centroids
               trained on 256 points per centroid, then every point assigned) and all-points k-means
  encoder      forward+backward throughput of the encoder (width 1.0, m 62, C 11, batch 64 sentences) at
               fp32, fp32 channels-last, bf16 autocast and bf16 channels-last
  epoch        two epochs of the default synthetic corpus (600 labelled + 200 unlabeled utterances, SSL)
               with the paper's network: seconds per stage, validation CCC, peak GPU memory
  sharing      one trial alone against four trials on the same GPU at once (what `resources.gpu: 0.25`
               does: Ray starts four trial processes that see the same GPU; it partitions neither memory
               nor compute): throughput ratio (goal >= 3.5) and peak GPU memory per trial

--cpu runs every part on the CPU at toy sizes (the tests run it); the report says which mode it was.
The report is rewritten (atomically) after every part, so a killed run still leaves the parts it finished.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_machine import describe_machine  # noqa: E402

from model.devices import usable_cpus  # noqa: E402

PARTS = ("environment", "kmeans", "encoder", "epoch", "sharing")
SHARING_GOAL = 3.5
MSP_CHUNKS = 1_650_000  # MSP-Podcast scale: ~150,000 sentences x C 11
# sizes per mode; caps in seconds (GPU caps add up to the 8-minute budget)
SETTINGS = {
    "gpu": {"caps": {"environment": 30, "kmeans": 100, "encoder": 60, "epoch": 120, "sharing": 170},
            "kmeans": {"n": MSP_CHUNKS, "cpu_fraction": 0.1, "k": 30, "iterations": 20, "dim": 256},
            "encoder": {"width": 1.0, "m": 62, "C": 11, "batch": 64, "steps": 10},
            "corpus": {"utterances": 600, "unlabeled": 200},
            "trial": {"width": 1.0, "chunk_frames": 62, "chunks_per_sentence": 11, "batch_size": 64,
                      "num_clusters": 10, "temporal": "gru"},
            "epoch_epochs": 2, "share": 4, "share_epochs": 4},
    "cpu": {"caps": {"environment": 30, "kmeans": 60, "encoder": 60, "epoch": 120, "sharing": 180},
            "kmeans": {"n": 16_500, "cpu_fraction": 0.1, "k": 30, "iterations": 5, "dim": 256},
            "encoder": {"width": 0.25, "m": 24, "C": 4, "batch": 8, "steps": 2},
            "corpus": {"utterances": 48, "unlabeled": 16},
            "trial": {"width": 0.125, "chunk_frames": 16, "chunks_per_sentence": 4, "batch_size": 8,
                      "num_clusters": 3, "temporal": "gru", "kmeans_iterations": 5, "precision": "fp32"},
            "epoch_epochs": 1, "share": 2, "share_epochs": 2},
}


# ---- helpers ---------------------------------------------------------------------------------------

def write_json(path: Path, data: dict) -> None:
    from model.atomic_files import atomic_write

    atomic_write(path, json.dumps(data, indent=2, default=str))


def nvidia_smi(query: str, kind: str = "gpu") -> list[list[str]] | None:
    """Rows of `nvidia-smi --query-<kind>=<query>` (None when nvidia-smi is missing or fails)."""
    try:
        out = subprocess.run(["nvidia-smi", f"--query-{kind}={query}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return [[c.strip() for c in line.split(",")] for line in out.stdout.strip().splitlines() if line.strip()]


class GpuMemorySampler(threading.Thread):
    """Peak GPU memory (MiB, as nvidia-smi reports it, CUDA context included) per process id, and the
    GPU's utilisation (percent of time a kernel ran) sampled over the same period."""

    def __init__(self, period: float = 0.5):
        super().__init__(daemon=True)
        self.period, self.peak, self._stop_event = period, {}, threading.Event()
        self.utilisation: list[tuple[float, float]] = []   # (time.time(), percent)

    def utilisation_between(self, start: float, end: float) -> float | None:
        """Mean sampled GPU utilisation (percent) between two time.time() stamps."""
        values = [u for t, u in self.utilisation if start <= t <= end]
        return round(sum(values) / len(values), 1) if values else None

    def run(self) -> None:
        while not self._stop_event.is_set():
            for row in nvidia_smi("utilization.gpu") or []:
                try:
                    self.utilisation.append((time.time(), float(row[0])))
                except (ValueError, IndexError):
                    pass
            for row in nvidia_smi("pid,used_memory", kind="compute-apps") or []:
                try:
                    pid, mib = int(row[0]), float(row[1])
                except (ValueError, IndexError):
                    continue
                self.peak[pid] = max(self.peak.get(pid, 0.0), mib)
            self._stop_event.wait(self.period)

    def stop(self) -> dict[int, float]:
        self._stop_event.set()
        self.join()
        return self.peak


def device_for(mode: str):
    """The torch device of the GPU parts: cuda (an error when there is none) or, with --cpu, the CPU."""
    import torch

    if mode == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("torch sees no CUDA device (torch.cuda.is_available() is False); run with --cpu "
                           "for the CPU parts")
    return torch.device("cuda")


def ensure_store(args) -> Path:
    """The synthetic store of the epoch and sharing parts (built once in the work folder, or --store)."""
    if args.store:
        return Path(args.store)
    from epoch_bench import ensure_store as build

    corpus = SETTINGS[args.mode]["corpus"]
    utterances, unlabeled = args.corpus or (corpus["utterances"], corpus["unlabeled"])
    return build(Path(args.work), utterances, unlabeled, 0)


# ---- the parts (each runs in its own process) ------------------------------------------------------

def part_environment(args) -> dict:
    import platform

    import torch

    from model.clustering import _faiss_gpus, faiss_builds

    info = {"python": platform.python_version(), "machine": describe_machine(), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "faiss_builds": faiss_builds()}
    if torch.cuda.is_available():
        info["gpus"] = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["gpus"].append({"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                                 "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count})
        info["bf16"] = torch.cuda.is_bf16_supported()
    smi = nvidia_smi("name,driver_version,memory.total")
    info["nvidia_smi"] = [{"name": r[0], "driver": r[1], "memory_mib": r[2]} for r in smi] if smi else None
    try:
        import faiss

        info["faiss"] = faiss.__version__
        info["faiss_gpus"] = _faiss_gpus(faiss)
    except ImportError as exc:
        info["faiss"] = None
        info["faiss_error"] = str(exc)
    info["faiss_gpu_ready"] = bool(info.get("faiss_gpus")) and info["cuda_available"]
    return info


def part_kmeans(args) -> dict:
    import faiss
    import torch

    from kmeans_scale_bench import embeddings, time_full_kmeans, time_project_kmeans
    from model.clustering import _faiss_gpus

    s = SETTINGS[args.mode]["kmeans"]
    threads = usable_cpus()
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    x = embeddings(s["n"], seed=1)
    small = x[:int(round(s["n"] * s["cpu_fraction"]))]
    out = {"n": s["n"], "dim": int(x.shape[1]), "k": s["k"], "iterations": s["iterations"], "cpu_threads": threads}

    def run(data, gpu: bool) -> dict:
        project = time_project_kmeans(data, s["k"], s["iterations"], use_gpu=gpu)
        full = time_full_kmeans(data, s["k"], s["iterations"], gpu=gpu)
        return {"n": len(data), "project_kmeans_s": round(project, 3), "all_points_kmeans_s": round(full, 3)}

    cpu = run(small, False)
    scale = s["n"] / len(small)
    cpu.update(project_kmeans_extrapolated_s=round(cpu["project_kmeans_s"] * scale, 2),
               all_points_extrapolated_s=round(cpu["all_points_kmeans_s"] * scale, 2))
    out["cpu_at_fraction"] = {**cpu, "fraction": s["cpu_fraction"]}
    if args.mode == "cpu":
        out["full_scale"] = {**run(x, False), "device": "cpu"}
    elif _faiss_gpus(faiss) == 0:
        out["full_scale"] = {"error": "this faiss build has no GPU support; install the `gpu` extra (faiss-gpu)"}
    else:
        run(x[:10_000], True)  # warm-up: GPU resources and kernels
        out["full_scale"] = {**run(x, True), "device": "gpu"}
    full = out["full_scale"]
    if "project_kmeans_s" in full:
        out["speedup_vs_cpu_extrapolated"] = {
            "project_kmeans": round(cpu["project_kmeans_extrapolated_s"] / max(full["project_kmeans_s"], 1e-9), 1),
            "all_points": round(cpu["all_points_extrapolated_s"] / max(full["all_points_kmeans_s"], 1e-9), 1)}
    return out


def part_encoder(args) -> dict:
    import torch

    from epoch_bench import encoder_throughput

    device = device_for(args.mode)
    s = SETTINGS[args.mode]["encoder"]
    torch.backends.cudnn.benchmark = True
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = encoder_throughput(s["width"], s["m"], s["C"], s["batch"], s["steps"], device=str(device))
    out = {**s, "device": str(device), "chunks_per_batch": s["batch"] * s["C"], "settings": result}
    if device.type == "cuda":
        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    return out


def trial_config(args, epochs: int, threads: int, seed: int):
    from model.config import TrainConfig

    device = "cpu" if args.mode == "cpu" else "cuda"
    return TrainConfig.from_dict({**SETTINGS[args.mode]["trial"], "epochs": epochs, "num_threads": threads,
                                  "device": device, "seed": seed}, source="gpu_check trial")


def run_trial(args, epochs: int, threads: int, seed: int = 0) -> dict:
    """Train one trial for `epochs` epochs in this process; per-epoch times and peak memory."""
    import torch

    from model.trainer import Trainer

    store = ensure_store(args)
    torch.backends.cudnn.benchmark = True
    start = time.time()
    trainer = Trainer(trial_config(args, epochs, threads, seed), store)
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    ready = time.time()
    if args.barrier:  # the sharing part starts every trial's first epoch at once, after all set up
        Path(args.barrier + f".ready-{os.getpid()}").touch()
        while not Path(args.barrier).exists():
            time.sleep(0.05)
    epochs_out = []
    for _ in range(epochs):
        m = trainer.run_epoch()
        epochs_out.append({k: m[k] for k in ("epoch", "val_ccc_mean", "time_epoch_s", "time_embed_s", "time_kmeans_s",
                                             "time_train_s", "time_batch_s", "time_validate_s", "chunks_per_s")
                           if k in m} | {"ssl_train_s": m.get("time_ssl_train_s"), "ended": time.time()})
    out = {"pid": os.getpid(), "device": str(trainer.device), "threads": threads, "precision": str(trainer.amp_dtype or "fp32"),
           "train_utterances": len(trainer.train_ids), "ssl_utterances": len(trainer.pool_ids),
           "validation_utterances": len(trainer.val_ids), "started": start, "setup_s": round(ready - start, 2),
           "epochs": epochs_out}
    if trainer.device.type == "cuda":
        out["peak_gpu_allocated_mib"] = round(torch.cuda.max_memory_allocated(trainer.device) / 2**20)
        out["peak_gpu_reserved_mib"] = round(torch.cuda.max_memory_reserved(trainer.device) / 2**20)
    return out


def part_epoch(args) -> dict:
    device_for(args.mode)
    return {"config": SETTINGS[args.mode]["trial"],
            **run_trial(args, SETTINGS[args.mode]["epoch_epochs"], usable_cpus())}


def part_trial(args) -> dict:
    """One trial of the sharing part (a worker process)."""
    return run_trial(args, args.epochs, args.threads, args.seed)


def steady_rate(trial: dict) -> float:
    """Epochs per second after the first epoch (warm-up, cuDNN autotuning), or over the only one."""
    ends = [e["ended"] for e in trial["epochs"]]
    if len(ends) >= 2:
        return (len(ends) - 1) / (ends[-1] - ends[0])
    return 1.0 / trial["epochs"][0]["time_epoch_s"]


def part_sharing(args) -> dict:
    device_for(args.mode)
    s = SETTINGS[args.mode]
    share, epochs = s["share"], args.share_epochs or s["share_epochs"]
    cores = usable_cpus()
    threads = max(1, min(4, cores // share))  # paper.yaml: cpu 4 per trial
    ensure_store(args)  # built once here, not by the workers at the same time
    work = Path(args.work) / "sharing"
    work.mkdir(parents=True, exist_ok=True)
    sampler = GpuMemorySampler() if args.mode != "cpu" else None
    if sampler:
        sampler.start()

    def phase(n: int) -> dict:
        procs = []
        start = time.time()
        barrier = work / f"go-{n}"
        barrier.unlink(missing_ok=True)
        for stale in work.glob(f"go-{n}.ready-*"):
            stale.unlink()
        for i in range(n):
            out = work / f"trial-{n}-{i}.json"
            out.unlink(missing_ok=True)
            cmd = [sys.executable, __file__, "--run-part", "trial", "--part-out", str(out), "--work", args.work,
                   "--epochs", str(epochs), "--threads", str(threads), "--seed", str(i), "--barrier", str(barrier)]
            if args.cpu:
                cmd.append("--cpu")
            if args.store:
                cmd += ["--store", args.store]
            if args.corpus:
                cmd += ["--corpus", ",".join(map(str, args.corpus))]
            log = open(work / f"trial-{n}-{i}.log", "w")
            procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), out, log))
        while len(list(work.glob(f"go-{n}.ready-*"))) < n and all(p.poll() is None for p, _, _ in procs):
            time.sleep(0.05)
        barrier.touch()  # every trial is set up (store open, network on the device): go
        trials = []
        for proc, out, log in procs:
            rc = proc.wait()
            log.close()
            if rc != 0:
                tail = Path(log.name).read_text()[-1500:]
                raise RuntimeError(f"a trial process exited with {rc}: {tail}")
            trials.append(json.loads(out.read_text())["result"])
        wall = time.time() - start
        rates = [steady_rate(t) for t in trials]
        return {"trials": n, "wall_s": round(wall, 2), "epochs_per_s": round(sum(rates), 5),
                "epoch_s_per_trial": [round(1 / r, 2) for r in rates],
                "val_ccc_mean_last": [t["epochs"][-1]["val_ccc_mean"] for t in trials],
                "peak_gpu_reserved_mib": [t.get("peak_gpu_reserved_mib") for t in trials],
                "pids": [t["pid"] for t in trials],
                # the window in which every trial was past its first epoch: the rates above are measured there
                "all_running_s": round(min(t["epochs"][-1]["ended"] for t in trials)
                                       - max(t["epochs"][0]["ended"] for t in trials), 2),
                "window": (max(t["epochs"][0]["ended"] for t in trials), min(t["epochs"][-1]["ended"] for t in trials))}

    try:
        alone = phase(1)
        together = phase(share)
    finally:
        peaks = sampler.stop() if sampler else {}
    for p in (alone, together):
        p["peak_gpu_mib_nvidia_smi"] = [peaks.get(pid) for pid in p["pids"]]
        if sampler:
            p["gpu_utilisation_pct"] = sampler.utilisation_between(*p["window"])
    ratio = together["epochs_per_s"] / alone["epochs_per_s"]
    return {"config": s["trial"], "epochs_per_trial": epochs, "threads_per_trial": threads,
            "alone": alone, "together": together, "throughput_ratio": round(ratio, 2),
            "goal": f">= {SHARING_GOAL} with {share} trials" if share == 4 else f"(goal {SHARING_GOAL} is for 4 trials)",
            "goal_met": ratio >= SHARING_GOAL if share == 4 and args.mode != "cpu" else None}


PART_FUNCTIONS = {"environment": part_environment, "kmeans": part_kmeans, "encoder": part_encoder,
                  "epoch": part_epoch, "sharing": part_sharing, "trial": part_trial}


# ---- the driver ------------------------------------------------------------------------------------

def run_part(name: str, cap: float, args, base_cmd: list[str]) -> dict:
    """Run one part in a child process (its own process group) within `cap` seconds; never raises."""
    out = Path(args.work) / f"part-{name}.json"
    log_path = Path(args.work) / f"part-{name}.log"
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*base_cmd, "--run-part", name, "--part-out", str(out)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=cap)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    seconds = round(time.perf_counter() - start, 1)
    tail = log_path.read_text(errors="replace")[-2000:]
    if rc is None:
        return {"ok": False, "seconds": seconds, "error": f"time cap of {cap:g} s reached; killed", "log": str(log_path),
                "log_tail": tail}
    if rc != 0 or not out.exists():
        return {"ok": False, "seconds": seconds, "error": f"exited with {rc}", "log": str(log_path), "log_tail": tail}
    return {"ok": True, "seconds": seconds, **json.loads(out.read_text())["result"]}


def corpus_size(text: str) -> tuple[int, int]:
    """--corpus UTTERANCES,UNLABELED -> (utterances, unlabeled)."""
    try:
        utterances, unlabeled = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected UTTERANCES,UNLABELED, e.g. 3000,1000") from None
    if utterances < 30 or unlabeled < 0:  # the synthetic corpus has 30 speakers, one utterance each at least
        raise argparse.ArgumentTypeError(f"{text!r}: expected at least 30 utterances (one per synthetic speaker) and 0 or more unlabeled")
    return utterances, unlabeled


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                epilog="Run on a GPU node: python benchmarks/gpu_check.py --out gpu_check.json")
    p.add_argument("--out", default="gpu_check.json", help="the JSON report")
    p.add_argument("--cpu", action="store_true", help="every part on the CPU at toy sizes (what the tests run)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    p.add_argument("--budget", type=float, default=480, help="seconds for all parts together (default 8 min)")
    p.add_argument("--cap", action="append", default=[], metavar="PART=SECONDS", help="override a part's time cap")
    p.add_argument("--work", default=None, help="work folder: corpus, store, logs (default: a temporary one)")
    p.add_argument("--store", help="feature store for the epoch and sharing parts (default: synthesised)")
    # internal: one part in this process
    p.add_argument("--run-part", choices=sorted(PART_FUNCTIONS), help=argparse.SUPPRESS)
    p.add_argument("--part-out", help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--barrier", help=argparse.SUPPRESS)
    p.add_argument("--corpus", type=corpus_size, metavar="UTTERANCES,UNLABELED",
                   help="size of the synthesised corpus of the epoch and sharing parts (default 600,200 on the GPU)")
    p.add_argument("--share-epochs", type=int, help="epochs per trial in the sharing part (default 4 on the GPU)")
    args = p.parse_args()
    args.mode = "cpu" if args.cpu else "gpu"

    if args.run_part:
        result = PART_FUNCTIONS[args.run_part](args)
        write_json(Path(args.part_out), {"result": result})
        return 0

    parts = [x for x in args.parts.split(",") if x]
    unknown = [x for x in parts if x not in PARTS]
    if unknown:
        print(f"error: --parts: unknown part(s) {', '.join(unknown)}; expected some of {', '.join(PARTS)}",
              file=sys.stderr)
        return 2
    caps = dict(SETTINGS[args.mode]["caps"])
    for item in args.cap:
        name, _, value = item.partition("=")
        try:
            caps[name] = float(value)
        except ValueError:
            print(f"error: --cap {item!r}: expected PART=SECONDS", file=sys.stderr)
            return 2
        if name not in PARTS:
            print(f"error: --cap {item!r}: unknown part {name!r}; expected one of {', '.join(PARTS)}", file=sys.stderr)
            return 2
    args.work = args.work or tempfile.mkdtemp(prefix="gpu_check-")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    base = [sys.executable, __file__, "--work", args.work] + (["--cpu"] if args.cpu else []) \
        + (["--store", args.store] if args.store else []) \
        + (["--corpus", ",".join(map(str, args.corpus))] if args.corpus else []) \
        + (["--share-epochs", str(args.share_epochs)] if args.share_epochs else [])
    out = Path(args.out)
    report = {"mode": args.mode, "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": describe_machine(),
              "work": args.work, "budget_s": args.budget, "caps_s": {k: caps[k] for k in parts}, "parts": {}}
    deadline = time.monotonic() + args.budget
    if not args.store and {"epoch", "sharing"} & set(parts):  # built once, before the parts and their caps
        print("[gpu_check] building the synthetic store ...", flush=True)
        started = time.perf_counter()
        args.store = str(ensure_store(args))
        base += ["--store", args.store]
        report["store_build_s"] = round(time.perf_counter() - started, 1)
    for name in parts:
        left = deadline - time.monotonic()
        if left < 5:
            report["parts"][name] = {"ok": False, "error": f"the {args.budget:g} s budget was spent before it began"}
        else:
            print(f"[gpu_check] {name} (cap {min(caps[name], left):.0f} s) ...", flush=True)
            report["parts"][name] = run_part(name, min(caps[name], left), args, base)
            r = report["parts"][name]
            print(f"[gpu_check] {name}: {'ok' if r['ok'] else 'FAILED: ' + r['error']} in {r['seconds']} s", flush=True)
        write_json(out, report)
    sharing = report["parts"].get("sharing", {})
    report["summary"] = {"parts_ok": [n for n, r in report["parts"].items() if r.get("ok")],
                         "parts_failed": [n for n, r in report["parts"].items() if not r.get("ok")],
                         "sharing_throughput_ratio": sharing.get("throughput_ratio"),
                         "sharing_goal_met": sharing.get("goal_met")}
    report["seconds"] = round(args.budget - max(0.0, deadline - time.monotonic()), 1)
    write_json(out, report)
    print(json.dumps(report["summary"]))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
