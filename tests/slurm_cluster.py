"""A real single-node Slurm on this machine for the tests: munged, slurmctld and slurmd (Debian's
`slurm-wlm` and `munge` packages), one node named `tnode` at 127.0.0.2 with 2 CPUs and no GPU, every
file (key, sockets, state, spool, logs, slurm.conf) in a temporary folder, free ports, daemons ended by
pid. The clients (sbatch, scontrol, ...) find it through SLURM_CONF in `env`."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tune_helpers import free_port

HOST = "127.0.0.2"
NODE = "tnode"
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel")


def missing_programs() -> list[str]:
    return [p for p in DAEMONS if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]


def _program(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def slurm_conf(root: Path, munge_socket: Path, kill_wait: int) -> str:
    ctld_port, slurmd_port = free_port(HOST), free_port(HOST)
    return f"""\
ClusterName=tunertest
SlurmctldHost={socket.gethostname().split('.')[0]}({HOST})
MailProg=/bin/true
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
PlugStackConfig={root}/plugstack.conf
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
JobRequeue=1
KillWait={kill_wait}
MinJobAge=600
NodeName={NODE} NodeAddr={HOST} NodeHostname={socket.gethostname()} CPUs=2 State=UNKNOWN
PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """munged, slurmctld and slurmd in `root` (a short folder: munge's socket path), ended by `stop`."""

    def __init__(self, root: Path, kill_wait: int = 30):
        self.root = root
        self.procs: dict[str, subprocess.Popen] = {}
        (root / "state").mkdir()
        (root / "spool").mkdir()
        munge = root / "munge"
        munge.mkdir(mode=0o700)
        self.munge_socket = munge / "sock"
        (root / "plugstack.conf").write_text("")
        self.conf = root / "slurm.conf"
        self.conf.write_text(slurm_conf(root, self.munge_socket, kill_wait))
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        for key in [k for k in self.env if k.startswith(("SLURM_", "SBATCH_", "SRUN_")) and k != "SLURM_CONF"]:
            del self.env[key]   # a test run inside a Slurm job must not hand its job's settings on

    def start(self) -> None:
        munge = self.munge_socket.parent
        subprocess.run([_program("mungekey"), "-c", "-k", str(munge / "key"), "-b", "1024"], check=True)
        self._start("munged", [_program("munged"), "-F", "-f", f"--key-file={munge / 'key'}",
                               f"--socket={self.munge_socket}", f"--pid-file={munge / 'pid'}",
                               f"--seed-file={munge / 'seed'}", f"--log-file={munge / 'log'}"])
        self._wait_for(self.munge_socket.exists, "munged's socket")
        self._start("slurmctld", [_program("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._start("slurmd", [_program("slurmd"), "-D", "-N", NODE, "-f", str(self.conf)])
        self._wait_for(self.node_idle, f"node {NODE} idle")

    def _start(self, name: str, argv: list[str]) -> None:
        log = open(self.root / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def _wait_for(self, ready, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"Slurm: no {what} (exited: {dead}):\n{self.logs()}")
            time.sleep(0.3)

    def node_idle(self) -> bool:
        """The node is up with nothing allocated (no job, none completing)."""
        return " State=IDLE " in self.scontrol("show", "node", NODE, check=False)

    def scontrol(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run([_program("scontrol"), *args], env=self.env, capture_output=True, text=True,
                              timeout=30)
        if check and proc.returncode != 0:
            raise RuntimeError(f"scontrol {' '.join(args)}: {proc.stderr}")
        return proc.stdout

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as key -> value (values without spaces; enough for states and counts)."""
        fields = {}
        for word in self.scontrol("show", "job", "--oneliner", job_id).split():
            key, _, value = word.partition("=")
            fields.setdefault(key, value)
        return fields

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out", "munged.out"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text().splitlines()[-30:]))
        return "\n".join(parts)

    def end_jobs(self, timeout: float = 90) -> None:
        """Cancel every job of this cluster and wait until none is left (their slurmstepd gone with them)."""
        if self.procs.get("slurmctld") is None or self.procs["slurmctld"].poll() is not None:
            return
        subprocess.run([_program("scancel"), "--user=root"], env=self.env, timeout=30)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            queue = subprocess.run([_program("squeue"), "--noheader"], env=self.env, capture_output=True,
                                   text=True, timeout=30)
            if queue.returncode == 0 and not queue.stdout.strip():
                return
            time.sleep(0.5)

    def stop(self) -> None:
        """End the jobs, then the daemons this cluster started (slurmd, slurmctld, munged), by pid."""
        self.end_jobs()
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
