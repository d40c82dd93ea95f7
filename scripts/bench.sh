#!/usr/bin/env bash
# Run every benchmark; each prints JSON lines {"bench","metric","value","unit","limit","ratio"}.
# Needs PostgreSQL and Redis (found or started as for the tests) and wrk for the API benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh requirements-dev.txt
eval "$(scripts/services.sh)"
db_base="${DATABASE_URL%/*}"
export BENCH_DATABASE_URL="${BENCH_DATABASE_URL:-$db_base/rtv_bench}" REDIS_URL="${REDIS_URL%/*}/14"
if ! command -v wrk >/dev/null 2>&1; then
  { apt-get install -y -qq wrk >/dev/null 2>&1 || sudo apt-get install -y -qq wrk >/dev/null 2>&1; } \
    || echo "bench: wrk is not installed; the API benchmarks will be skipped" >&2
fi
.venv/bin/python bench/ingest.py "$@"
.venv/bin/python bench/quality.py
.venv/bin/python bench/features.py
if command -v wrk >/dev/null 2>&1; then .venv/bin/python bench/api.py; .venv/bin/python bench/predictions.py; fi
