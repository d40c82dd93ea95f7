#!/usr/bin/env bash
# Create .venv with Python 3.11 and install the pinned requirements (re-run only when they change).
# Usage: scripts/bootstrap.sh [requirements file]   (default: requirements.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
req="${1:-requirements.txt}"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      py="$cand"; break
    fi
  done
fi
[ -n "$py" ] || { echo "bootstrap: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$py" -m venv .venv
stamp=".venv/.installed-$(cat requirements.txt "$req" | sha256sum | cut -c1-16)-$(basename "$req")"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing $req into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2> >(grep -v "is ignored" >&2)
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$req" 2> >(grep -v "is ignored" >&2)
  touch "$stamp"
fi
