"""How often a requeued Slurm job fails when it is let start again at once: the cause of the old
tests/test_slurm.py flake, measured in seconds per sample instead of a search per sample.

A tiny batch job requeues itself (`scontrol requeue`, as cluster/slurm/search.sbatch does) at a random
moment; the requeued job is let start as the test does (node idle, then `scontrol update
StartTime=...`). With `--start now` slurmd refuses the new credential whenever the scheduler starts
the job within the second of the requeue ("Job N already killed, do not launch batch job") and the
job ends FAILED; with `now+1` (what the test uses) it never is. Needs root and Debian's slurm-wlm and
munge (tests/slurm_cluster.py starts a single-node Slurm on 127.0.0.2).

Usage: python benchmarks/slurm_requeue_race.py [--runs 20] [--start now|now+1] [--poll 0.1]
Prints each job's outcome, then `failed F of N` and how many launches slurmd refused.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from slurm_cluster import SlurmCluster  # noqa: E402

JOB = """#!/bin/bash
#SBATCH --requeue
#SBATCH --open-mode=append
echo "job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0}"
if [ "${SLURM_RESTART_COUNT:-0}" = 0 ]; then
    sleep "$((1 + RANDOM % 3)).$((RANDOM % 10))"   # the requeue lands anywhere in a second
    scontrol requeue "$SLURM_JOB_ID"
    exit 130
fi
"""


def wait(check, poll: float):
    while not (value := check()):
        time.sleep(poll)
    return value


def one_job(cluster: SlurmCluster, script: Path, start: str, poll: float) -> str:
    """Submit, wait for the requeue, let the job start at `start`; its final state."""
    submit = subprocess.run(["sbatch", "--parsable", f"--output={cluster.root / 'job.out'}", str(script)],
                            env=cluster.env, capture_output=True, text=True, check=True)
    job_id = submit.stdout.strip()

    def requeued():
        job = cluster.job(job_id)
        return job if job["Restarts"] == "1" and job["JobState"] in ("PENDING", "RUNNING", "COMPLETED") else None

    if wait(requeued, poll)["JobState"] == "PENDING":
        wait(cluster.node_idle, poll)
        cluster.scontrol("update", f"JobId={job_id}", f"StartTime={start}")

    def finished():
        state = cluster.job(job_id)["JobState"]
        return state if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") else None

    return wait(finished, poll)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--start", default="now", help="the requeued job's StartTime (now, now+1)")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between Slurm queries")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sq", dir="/tmp"))   # short: munge's socket path
    cluster = SlurmCluster(root)
    script = root / "job.sh"
    script.write_text(JOB)
    failed = 0
    try:
        cluster.start()
        for run in range(1, args.runs + 1):
            state = one_job(cluster, script, args.start, args.poll)
            failed += state != "COMPLETED"
            print(f"job {run}: {state}", flush=True)
        refused = (root / "slurmd.log").read_text().count("already killed, do not launch batch job")
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"StartTime={args.start}: failed {failed} of {args.runs}; launches refused by slurmd: {refused}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
