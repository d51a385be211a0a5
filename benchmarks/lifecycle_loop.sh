#!/usr/bin/env bash
# The bucket kill-and-resume life cycle (tests/test_bucket_search.py) N times in a row (default 10);
# prints each run's outcome, the machine's load before and after, and "passed X of N".
# Usage: benchmarks/lifecycle_loop.sh [N]   (PYTHON: the interpreter, default .venv/bin/python;
# LOG_DIR: where each run's pytest output goes, default a fresh folder under /tmp)
set -u
cd "$(dirname "$0")/.."
runs=${1:-10}
python=${PYTHON:-.venv/bin/python}
logs=${LOG_DIR:-$(mktemp -d /tmp/lifecycle-loop.XXXXXX)}
mkdir -p "$logs"
echo "load before: $(uptime)"
passed=0
for i in $(seq 1 "$runs"); do
  start=$(date +%s)
  if "$python" -m pytest -q -p no:cacheprovider tests/test_bucket_search.py > "$logs/run-$i.log" 2>&1; then
    passed=$((passed + 1))
    outcome=passed
  else
    outcome="FAILED (see $logs/run-$i.log)"
  fi
  echo "run $i: $outcome in $(( $(date +%s) - start )) s"
done
echo "load after: $(uptime)"
echo "passed $passed of $runs"
[ "$passed" -eq "$runs" ]
