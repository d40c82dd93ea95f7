#!/usr/bin/env bash
# The whole suite on real PostgreSQL and Redis, with ruff and mypy.  Fails when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh requirements-dev.txt
eval "$(scripts/services.sh)"
# Azurite, Azure Blob Storage's emulator, for the cloud storage tests (S3's, moto, is a Python package):
# installed once, exactly as scripts/azurite/package-lock.json pins it and its dependencies.
export RTV_AZURITE="$PWD/var/tools/node_modules/.bin/azurite-blob"
if [ ! -x "$RTV_AZURITE" ] || ! cmp -s scripts/azurite/package-lock.json var/tools/package-lock.json; then
  command -v npm >/dev/null || { echo "test: npm (Node.js) is needed to install Azurite" >&2; exit 1; }
  mkdir -p var/tools && cp scripts/azurite/package.json scripts/azurite/package-lock.json var/tools/
  npm ci --prefix var/tools --no-audit --no-fund --loglevel=error >&2
fi
export DATABASE_URL REDIS_URL DJANGO_SETTINGS_MODULE=rtv.settings.test
export RTV_VAR_DIR="$PWD/var/test"
echo "test: DATABASE_URL=$DATABASE_URL REDIS_URL=$REDIS_URL" >&2
echo "== ruff" >&2
.venv/bin/ruff check .
echo "== mypy" >&2
.venv/bin/mypy rtv ingestion quality features modelling
echo "== pytest" >&2
.venv/bin/python -m pytest --durations=10 "$@"
# The embedded run (make run) stores on SQLite, where the write paths differ: the device door, the
# look-ups for stored duplicates and the predictions' reference check again there.
echo "== pytest (device submissions on the embedded SQLite database)" >&2
env -u DATABASE_URL RTV_VAR_DIR="$PWD/var/test-sqlite" .venv/bin/python -m pytest -q -p no:cacheprovider \
    tests/ingestion/test_submissions.py tests/quality/test_duplicates.py tests/modelling/test_prediction_references.py
