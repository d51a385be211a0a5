"""Speed of the synthetic corpus generator: utterances/s, hours of audio, times real time, machine.

    python benchmarks/synth_bench.py [--utterances 1000] [--unlabeled 0] [--speakers 30] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_machine import describe_machine  # noqa: E402

from model.synth import synthesize_corpus  # noqa: E402


def cpu_seconds() -> float:
    """CPU time used so far by this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    """Write one corpus into a temporary folder and print its speed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=1000)
    parser.add_argument("--unlabeled", type=int, default=0)
    parser.add_argument("--speakers", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started, cpu_started = time.perf_counter(), cpu_seconds()
        out = synthesize_corpus(Path(tmp) / "corpus", utterances=args.utterances, unlabeled=args.unlabeled,
                                speakers=args.speakers, seed=args.seed, workers=args.workers)
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
        info = json.loads((out / "synth.json").read_text())
    total = args.utterances + args.unlabeled
    audio_s = info["labelled_seconds"] + info["unlabeled_seconds"]
    print(f"machine: {describe_machine()}")
    print(f"utterances: {total} with {args.workers} worker(s) in {seconds:.1f} s "
          f"= {total / seconds:.1f} utterances/s")
    print(f"audio: {audio_s / 3600:.2f} h = {audio_s / seconds:.0f}x real time")
    print(f"CPU time: {cpu:.1f} s = {1000 * cpu / total:.0f} ms per utterance "
          f"(about {cpu / max(1, min(args.workers, os.cpu_count() or 1)):.0f} s wall on idle cores)")


if __name__ == "__main__":
    main()
