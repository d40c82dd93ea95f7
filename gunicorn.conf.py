"""gunicorn's settings for the web server; gunicorn reads ``./gunicorn.conf.py`` on its own.

Prometheus counts in each process.  With several web workers, each scrape of ``/metrics`` reached
one of them and read that worker's requests only: the totals jumped between scrapes and went
backwards.  prometheus_client's multiprocess mode has every worker write its figures to files in one
directory and ``/metrics`` add them up.  The directory must be named before any worker imports
prometheus_client, so it is set here, in the master, before the workers are forked.

``PROMETHEUS_MULTIPROC_DIR`` from the environment is used when set (its old files are deleted at
start, as prometheus_client requires); otherwise a fresh temporary directory per server, removed
when the server stops.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

# A sync worker reads a whole upload (up to 200 MB), hashes it and stores it inside the request;
# gunicorn's default of 30 s would kill it part-way over a field office's link (2 MB/s is 100 s).
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "300"))

_OWN = "RTV_PROMETHEUS_TEMP_DIR"  # the directory this server made (a reload reads this file again)
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ[_OWN] = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="rtv-prometheus-")


def on_starting(server: Any) -> None:
    """Figures left by an earlier server would be added to this one's."""
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """A worker that died or was replaced: its gauges go (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    own = os.environ.get(_OWN)
    if own and own == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(own, ignore_errors=True)
