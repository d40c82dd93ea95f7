"""Shared benchmark plumbing: the JSON line format, a fresh benchmark database, timing helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VAR = REPO / "var" / "bench"


def emit(bench: str, metric: str, value: float, unit: str, limit: float | None = None,
         ratio: float | None = None, **extra: object) -> None:
    """One result line: {"bench", "metric", "value", "unit", "limit", "ratio"} (+ context)."""
    line = {"bench": bench, "metric": metric, "value": round(value, 4), "unit": unit,
            "limit": None if limit is None else round(limit, 4), "ratio": None if ratio is None else round(ratio, 4),
            **extra}
    print(json.dumps(line), flush=True)


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    # Absolute, and in the environment: the servers a bench starts (gunicorn) use the same data
    # areas and model registry as the bench process, whatever directory they start in.
    os.environ["RTV_VAR_DIR"] = str(Path(os.environ.get("RTV_VAR_DIR", str(VAR))).resolve())
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


def fresh_database() -> None:
    """Drop and recreate the benchmark database, then migrate it (quietly)."""
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    admin = f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432} user={db['USER'] or 'postgres'} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db["NAME"]}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{db["NAME"]}"')
    # The model registry is part of the state: a fresh database gets a fresh MLflow store too.
    import shutil

    from django.conf import settings as dj

    uri = str(dj.MLFLOW_TRACKING_URI)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).unlink(missing_ok=True)
    if "://" not in str(dj.MLFLOW_ARTIFACT_ROOT):
        shutil.rmtree(dj.MLFLOW_ARTIFACT_ROOT, ignore_errors=True)
    subprocess.run([sys.executable, str(REPO / "manage.py"), "migrate", "-v0"], check=True, cwd=REPO,
                   env={**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings"})


def settle() -> None:
    """VACUUM ANALYZE the benchmark database, then CHECKPOINT it: after a bulk load the planner's
    statistics are stale, autovacuum would run in the middle of a measurement, and the checkpointer
    would write out what the load and the vacuum dirtied, both on the machine the servers share.
    A platform in service is past that point."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        cursor.execute("CHECKPOINT")  # the bench's role is a superuser (or has pg_checkpoint)


def refuse_errors(bench: str, result: Mapping[str, object]) -> None:
    """A latency or rate measured over error answers is not the figure asked for: stop loudly."""
    if result.get("non_2xx"):
        sys.exit(f"{bench}: {result['non_2xx']} answers were not 2xx; the figures would not be the endpoint's")


def postgres_cpu_seconds() -> float | None:
    """CPU seconds the PostgreSQL processes on this machine have spent so far (every server process,
    and the backends that have exited, through the postmaster's children's times); None without
    /proc or without such a process.  The bench's figure, when its database is on this machine."""
    total, found = 0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, _, rest = text.partition(" (")[2].rpartition(") ")
        if name not in ("postgres", "postmaster"):
            continue
        fields = rest.split()
        total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
        found = True
    return total / os.sysconf("SC_CLK_TCK") if found else None


@contextmanager
def timer() -> Iterator[list[float]]:
    out: list[float] = []
    t0 = time.perf_counter()
    yield out
    out.append(time.perf_counter() - t0)
