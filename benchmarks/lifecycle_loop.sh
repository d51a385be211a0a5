#!/usr/bin/env bash
# A kill-and-resume test N times in a row (default 10): by default the bucket life cycle
# (tests/test_bucket_search.py); give test ids after N for others. Prints each run's outcome, its time and
# the machine's load after it, the load before and after the loop, and "passed X of N".
# Usage: benchmarks/lifecycle_loop.sh [N [TEST_ID...]]
#   e.g. benchmarks/lifecycle_loop.sh 5 tests/test_tune_resume.py::test_sigkilled_driver_resumes_without_losing_trials_or_searcher
# (PYTHON: the interpreter, default .venv/bin/python; LOG_DIR: where each run's pytest output goes, default a
# fresh folder under /tmp; each run gets its own pytest basetemp there, kept when the run fails)
set -u
cd "$(dirname "$0")/.."
runs=${1:-10}
shift $(( $# > 0 ? 1 : 0 ))
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(tests/test_bucket_search.py)
python=${PYTHON:-.venv/bin/python}
logs=${LOG_DIR:-$(mktemp -d /tmp/lifecycle-loop.XXXXXX)}
mkdir -p "$logs"
echo "tests: ${tests[*]}"
echo "load before: $(uptime)"
passed=0
for i in $(seq 1 "$runs"); do
  start=$(date +%s)
  if "$python" -m pytest -q -p no:cacheprovider --basetemp="$logs/tmp-$i" "${tests[@]}" > "$logs/run-$i.log" 2>&1; then
    passed=$((passed + 1))
    outcome=passed
    rm -rf "$logs/tmp-$i"
  else
    outcome="FAILED (see $logs/run-$i.log)"
  fi
  echo "run $i: $outcome in $(( $(date +%s) - start )) s, load after:$(uptime | sed 's/.*load average://')"
done
echo "load after: $(uptime)"
echo "passed $passed of $runs"
[ "$passed" -eq "$runs" ]
