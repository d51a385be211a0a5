"""model.cpu_memory: freed large blocks are reused without page faults (each case in its own process)."""
import os
import subprocess
import sys

import pytest

from model.cpu_memory import _is_glibc

# Page faults per 200 MB tensor (51,200 pages of 4 KB; torch's allocator: numpy asks for huge pages), once warm.
PROBE = """
import resource, sys
import torch
from model.cpu_memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(12):     # glibc's heap reaches its steady state after a few rounds
    torch.ones(50_000_000).sum()
before = faults()
for _ in range(4):
    torch.ones(50_000_000).sum()
print(applied, (faults() - before) // 4)
"""


def probe(mode: str, **env) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout.split()
    return out[0], int(out[1])


pytestmark = pytest.mark.skipif(not _is_glibc(), reason="the setting exists for glibc's malloc only")


def test_freed_blocks_are_reused_without_page_faults():
    applied, kept = probe("keep")
    _, system = probe("plain")
    assert applied == "True"
    assert system > 40_000          # glibc's default: every 200 MB block is mapped and faulted in again
    assert kept < system / 20       # kept: the heap's pages are reused


def test_opt_out_leaves_malloc_alone():
    applied, faults = probe("keep", DEEPEMOCLUSTER_MALLOC="system")
    assert applied == "False" and faults > 40_000


def test_trainer_on_the_cpu_keeps_freed_memory(tiny_store):
    code = ("import sys, model.cpu_memory as m; from model.config import TrainConfig; from model.trainer import Trainer; "
            "Trainer(TrainConfig(device='cpu', num_threads=1), sys.argv[1]); print(m._applied)")
    out = subprocess.run([sys.executable, "-c", code, str(tiny_store)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_an_unknown_setting_is_refused_naming_it():
    code = "from model.cpu_memory import keep_freed_memory; keep_freed_memory()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "DEEPEMOCLUSTER_MALLOC": "off"})
    assert out.returncode != 0 and "DEEPEMOCLUSTER_MALLOC='off'" in out.stderr and "keep" in out.stderr
