"""model.cpu_memory: freed large blocks are reused without page faults, in the main thread and in a
trial-like thread (each case in its own process); only the entry points change the process."""
import os
import subprocess
import sys

import pytest

from malloc_probe import BLOCK_FAULTS
from model.cpu_memory import OPT_OUT, TUNABLES, _is_glibc, worker_environment

# argv: keep|plain, main|thread. `thread`: like a trial in a Ray worker, other threads already hold
# malloc arenas of their own when a fresh thread starts training.
PROBE = BLOCK_FAULTS + """
import sys, threading
from model.cpu_memory import keep_freed_blocks_in_malloc
applied = keep_freed_blocks_in_malloc() if sys.argv[1] == "keep" else None
if sys.argv[2] == "main":
    faults = block_faults()
else:
    stop = threading.Event()
    def background():
        blocks = [bytearray(4096) for _ in range(100)]
        stop.wait()
    others = [threading.Thread(target=background) for _ in range(3)]
    for t in others:
        t.start()
    result = []
    trial = threading.Thread(target=lambda: result.append(block_faults()))
    trial.start()
    trial.join()
    stop.set()
    faults = result[0]
print(applied, faults)
"""


def probe(mode: str, where: str = "main", **env) -> tuple[str, int]:
    base = {k: v for k, v in os.environ.items() if k not in (OPT_OUT, TUNABLES)}
    out = subprocess.run([sys.executable, "-c", PROBE, mode, where], capture_output=True, text=True, check=True,
                         env={**base, **env}).stdout.split()
    return out[0], int(out[1])


@pytest.fixture
def default_setting(monkeypatch):
    """The driver's environment without any allocator setting of the test runner's own."""
    monkeypatch.delenv(OPT_OUT, raising=False)
    monkeypatch.delenv(TUNABLES, raising=False)


pytestmark = pytest.mark.skipif(not _is_glibc(), reason="the setting exists for glibc's malloc only")


def test_freed_blocks_are_reused_without_page_faults():
    applied, kept = probe("keep")
    _, system = probe("plain")
    assert applied == "True"
    assert system > 40_000          # glibc's default: every 200 MB block is mapped and faulted in again
    assert kept < system / 20       # kept: the heap's pages are reused


def test_a_trial_thread_reuses_freed_blocks_in_a_worker_environment(default_setting):
    """A second thread has an arena of its own, which maps large blocks afresh whatever mallopt says;
    a process started with worker_environment() has one arena, and the thread reuses the heap too."""
    _, own_arena = probe("keep", "thread")
    applied, one_arena = probe("keep", "thread", **worker_environment())
    assert own_arena > 40_000
    assert applied == "True" and one_arena < own_arena / 20


def test_opt_out_leaves_malloc_alone(default_setting, monkeypatch):
    applied, faults = probe("keep", DEEPEMOCLUSTER_MALLOC="system")
    assert applied == "False" and faults > 40_000
    monkeypatch.setenv(OPT_OUT, "system")
    env = worker_environment()
    assert env == {OPT_OUT: "system"}                       # workers opt out too; no tunable
    applied, faults = probe("keep", "thread", **env)
    assert applied == "False" and faults > 40_000


def test_worker_environment_keeps_the_drivers_tunables(default_setting, monkeypatch):
    assert worker_environment() == {OPT_OUT: "keep", TUNABLES: "glibc.malloc.arena_max=1"}
    monkeypatch.setenv(TUNABLES, "glibc.malloc.tcache_count=0")
    assert worker_environment()[TUNABLES] == "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1"
    monkeypatch.setenv(TUNABLES, "glibc.malloc.arena_max=4")  # the user's own limit stays
    assert worker_environment()[TUNABLES] == "glibc.malloc.arena_max=4"


def run_python(code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != OPT_OUT}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env={**base, **env})


def test_building_a_trainer_or_a_predictor_leaves_the_process_alone(tiny_store):
    """A library user's process keeps glibc's defaults unless it calls keep_freed_blocks_in_malloc() itself."""
    code = ("import sys, model.cpu_memory as m; from model.config import TrainConfig; from model.trainer import Trainer; "
            "from model.inference import resolve_model; "
            "t = Trainer(TrainConfig(device='cpu', num_threads=1), sys.argv[1]); "
            "resolve_model((t.network, t.model_info()), 'cpu'); print(m._applied)")
    out = run_python(code, str(tiny_store))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "None"


def test_cli_commands_apply_it(tmp_path):
    """Any command, even one that fails on its input (here: no such run)."""
    code = "import sys, model.cpu_memory as m; from tuner.cli import main; main(['status', 'x', '--storage', sys.argv[1]]); print(m._applied)"
    out = run_python(code, str(tmp_path))
    assert out.stdout.strip().splitlines()[-1] == "True", out.stderr[-2000:]


def test_an_unknown_setting_is_refused_naming_it(tmp_path):
    code = "import sys; from tuner.cli import main; sys.exit(main(['status', 'x', '--storage', sys.argv[1]]))"
    out = run_python(code, str(tmp_path), DEEPEMOCLUSTER_MALLOC="off")
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: DEEPEMOCLUSTER_MALLOC='off': expected keep (the default) or system "
                                  "(leave malloc as it is)")
