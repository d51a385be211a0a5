"""Where one CPU training step's time goes: oneDNN's convolution kernels per layer against the whole step.

    .venv/bin/python benchmarks/step_profile.py                 # the reference's setting: width 1.0, 352 chunks
    .venv/bin/python benchmarks/step_profile.py --steps 8 --width 0.5

One training step of the network as the Trainer runs it on the CPU (bf16 autocast where the CPU has it,
channels-last encoder, the allocator setting of model/cpu_memory.py, SGD), on random chunks of m 62 x 128
(batch 32 sentences x C 11). It prints the median step time, then, from a second process with
ONEDNN_VERBOSE=1 (oneDNN times each primitive it runs), the milliseconds per step of each conv layer's
forward, backward-data and backward-weights kernels and their share of the step: what is left is
BatchNorm, ReLU, the heads, the losses and the optimiser.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

PASSES = {"forward_training": "forward", "backward_data": "backward data", "backward_weights": "backward weights"}


def step_times(args) -> list[float]:
    """Seconds per training step, after two warm-up steps."""
    import torch

    from model.cpu_memory import keep_freed_blocks_in_malloc
    from model.devices import cpu_supports_bf16
    from model.network import DeepEmoCluster

    keep_freed_blocks_in_malloc()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = DeepEmoCluster(args.temporal, 10, 62, 11, 3, args.width)
    net.encoder.conv.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(32 * 11, 1, 62, 128).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 10, (32 * 11,))

    def step() -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_supports_bf16()):
            out = net(x)
        loss = torch.nn.functional.cross_entropy(out.logits.float(), target) + out.attributes.float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    for _ in range(2):
        step()
    return [step() for _ in range(args.steps)]


def conv_kernels(args) -> dict[tuple[str, str], float]:
    """Milliseconds per step of each (conv shape, pass), from oneDNN's verbose log of a fresh process."""
    cmd = [sys.executable, __file__, "--steps", str(args.steps), "--width", str(args.width),
           "--threads", str(args.threads), "--temporal", args.temporal, "--times-only"]
    log = subprocess.run(cmd, env={**os.environ, "ONEDNN_VERBOSE": "1"}, capture_output=True, text=True,
                         check=True).stdout
    total: dict[tuple[str, str], float] = defaultdict(float)
    for line in log.splitlines():
        fields = line.split(",")
        if len(fields) > 8 and fields[3:6] == ["exec", "cpu", "convolution"]:
            total[(fields[-2], PASSES.get(fields[7], fields[7]))] += float(fields[-1])
    return {key: ms / (args.steps + 2) for key, ms in total.items()}   # the warm-up steps are logged too


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up steps)")
    p.add_argument("--width", type=float, default=1.0, help="encoder width (1.0: the reference's channels)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable CPUs)")
    p.add_argument("--temporal", default="gru", help="temporal module of the network")
    p.add_argument("--times-only", action="store_true", help=argparse.SUPPRESS)   # the verbose child
    args = p.parse_args()
    if args.threads is None:
        from model.devices import usable_cpus

        args.threads = usable_cpus()
    times = step_times(args)
    if args.times_only:
        print(json.dumps(times))
        return 0
    from bench_machine import describe_machine

    step_ms = statistics.median(times) * 1000
    print(describe_machine())
    print(f"training step (352 chunks, width {args.width}, {args.temporal}, {args.threads} threads): "
          f"median {step_ms:.0f} ms of {args.steps}")
    kernels = conv_kernels(args)
    print(f"{'conv layer (oneDNN shape)':<62} {'pass':<17} {'ms/step':>8}")
    for (shape, kind), ms in sorted(kernels.items(), key=lambda item: -item[1]):
        print(f"{shape:<62} {kind:<17} {ms:8.1f}")
    conv = sum(kernels.values())
    print(f"conv kernels {conv:.0f} ms per step = {conv / step_ms:.0%} of the step (measured in a process "
          f"of its own with ONEDNN_VERBOSE=1); the rest, {max(step_ms - conv, 0):.0f} ms: BatchNorm, ReLU, "
          "heads, losses, optimiser")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
