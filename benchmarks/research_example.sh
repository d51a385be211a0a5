#!/usr/bin/env bash
# The worked example of docs/research.md, end to end, with the wall time of each step.
# Run from the repository root: bash benchmarks/research_example.sh [PYTHON]
set -euo pipefail
PY=${1:-.venv/bin/python}
step() { echo "== $(date -u +%H:%M:%S) $*"; local t=$SECONDS; "$@"; echo "== $((SECONDS - t)) s: $*"; }
step "$PY" -m tuner run --space search_spaces/research_temporal.yaml --name research-temporal
step "$PY" -m tuner confirm research-temporal --top 1 --seeds 3
step "$PY" -m tuner run --space search_spaces/research_ssl.yaml --name research-ssl
step "$PY" -m tuner confirm research-ssl --top 1 --seeds 3
if "$PY" -m tuner report --help >/dev/null 2>&1; then
  step "$PY" -m tuner report research-temporal
  step "$PY" -m tuner report research-ssl
fi
