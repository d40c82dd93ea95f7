#!/usr/bin/env bash
# Set up and run the platform on embedded defaults (SQLite, local files, filesystem broker):
# migrate, demo users, demo data, a first model, then web + worker + scheduler until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh requirements.txt
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-rtv.settings.local}"
PORT="${PORT:-8000}"
py=.venv/bin/python
mkdir -p var/demo
$py manage.py migrate --no-input -v0
$py manage.py collectstatic --no-input -v0
$py manage.py seed_demo_users
if [ ! -f var/demo/.ingested ]; then
  $py manage.py generate_survey --rows 3000 --format csv --bad-rate 0.02 --seed 7 -o var/demo/demo_survey.csv
  $py manage.py ingest_file var/demo/demo_survey.csv
  $py manage.py train_model
  touch var/demo/.ingested
fi
pids=()
cleanup() { trap - INT TERM EXIT; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup INT TERM EXIT
.venv/bin/celery -A rtv worker --loglevel=WARNING --concurrency=2 >>var/worker.log 2>&1 & pids+=($!)
.venv/bin/celery -A rtv beat --loglevel=WARNING >>var/beat.log 2>&1 & pids+=($!)
echo "RTV platform on http://127.0.0.1:$PORT  (admin: /admin/, API: /api/v1/, docs: /api/docs/) - Ctrl-C to stop"
.venv/bin/gunicorn rtv.wsgi:application --bind "127.0.0.1:$PORT" --workers 2 --access-logfile - &
pids+=($!)
wait "${pids[-1]}"
