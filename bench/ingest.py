"""Ingestion throughput and memory, end to end (hash, keep original, parse, map, validate, label,
store by COPY, issues, finalise), against a bare COPY of the same rows into the same table.

    python bench/ingest.py [--rows 1000000] [--workers 2] [--xlsx-rows 100000] [--json-rows 300000]

Targets (issue 3): CSV >= 40% of the bare COPY rate; XLSX >= 10,000 rows/s; JSON >= 30,000 rows/s;
worker peak memory < 1.5 GB on the 1M-row file.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import REPO, VAR, emit, fresh_database, setup_django


def _worker(chunk_ids: list[int], out: mp.Queue) -> None:  # type: ignore[type-arg]
    """A fresh process (spawned, so its memory is its own) that takes chunks like a Celery worker."""
    setup_django()
    from ingestion.services import chunk_process

    for cid in chunk_ids:
        chunk_process(cid)  # claims make it safe for workers to race over the same list
    out.put(("worker", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))


def _planner(batch_id: str, out: mp.Queue) -> None:  # type: ignore[type-arg]
    setup_django()
    from ingestion.services import batch_plan

    ids = batch_plan(batch_id, enqueue=False)
    out.put(("plan", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, ids))


def ingest(path: Path, workers: int) -> tuple[float, int, object]:
    """Seconds end to end and the peak RSS (bytes) of the planning and worker processes."""
    from ingestion.models import IngestionBatch
    from ingestion.services import batch_create

    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    t0 = time.perf_counter()
    with path.open("rb") as fh:
        batch = batch_create(fh=fh, original_name=path.name, force=True)
    planner = ctx.Process(target=_planner, args=(str(batch.pk), out))
    planner.start()
    _, plan_peak, chunk_ids = out.get()
    planner.join()
    procs = [ctx.Process(target=_worker, args=(chunk_ids[i::workers] + chunk_ids, out)) for i in range(workers)]
    for p in procs:
        p.start()
    peaks = [out.get()[1] for _ in procs]
    for p in procs:
        p.join()
    seconds = time.perf_counter() - t0
    batch = IngestionBatch.objects.get(pk=batch.pk)
    assert batch.status == "succeeded", batch.status
    return seconds, max([plan_peak, *peaks]), batch


def bare_copy_rate(batch: object) -> tuple[float, int]:
    """Rows/s of a bare COPY FROM of exactly the rows the ingestion stored, into the same tables
    (records and their typed values), with nothing else done."""
    from django.db import connection

    from ingestion.models import SURVEY_VALUE_FIELDS, SurveyRecord, SurveyValues
    from ingestion.services import RECORD_COLUMNS

    rec_cols = ", ".join(f'"{SurveyRecord._meta.get_field(c).column}"' for c in RECORD_COLUMNS)
    val_cols = ", ".join(f'"{c}"' for c in SURVEY_VALUE_FIELDS)
    rec_table, val_table = SurveyRecord._meta.db_table, SurveyValues._meta.db_table
    offset = 10**9  # new ids for the copies: the same rows, again, under fresh keys
    dumps = {
        "records": (VAR / "bare_records.csv",
                    f"SELECT id + {offset}, {rec_cols} FROM {rec_table} WHERE batch_id = %s",
                    f"COPY {rec_table} (id, {rec_cols}) FROM STDIN WITH (FORMAT csv)"),
        "values": (VAR / "bare_values.csv",
                   f"SELECT v.record_id + {offset}, {', '.join('v.' + c for c in val_cols.split(', '))} FROM {val_table} v "
                   f"JOIN {rec_table} r ON r.id = v.record_id WHERE r.batch_id = %s",
                   f"COPY {val_table} (record_id, {val_cols}) FROM STDIN WITH (FORMAT csv)"),
    }
    for path, select, _ in dumps.values():
        with connection.cursor() as cur, path.open("wb") as fh, cur.cursor.copy(
                f"COPY ({select}) TO STDOUT WITH (FORMAT csv)", [str(batch.pk)]) as copy:  # type: ignore[attr-defined]
            for data in copy:
                fh.write(data)
    rows = sum(1 for _ in dumps["records"][0].open("rb"))
    t0 = time.perf_counter()
    with connection.cursor() as cur:
        for path, _, copy_sql in dumps.values():
            with path.open("rb") as fh, cur.cursor.copy(copy_sql) as copy:
                while block := fh.read(1 << 20):
                    copy.write(block)
    seconds = time.perf_counter() - t0
    for path, _, _ in dumps.values():
        path.unlink()
    return rows / seconds, rows


def make_file(rows: int, fmt: str, seed: int) -> Path:
    """Generate in a child process, so the generator's memory never counts against ingestion."""
    path = VAR / f"survey-{rows}-{seed}.{fmt}"
    if not path.exists():
        code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); "
                "from ingestion.synthetic.generator import generate, write; "
                f"d, e = generate({rows}, seed={seed}, bad_rate=0.02); write(d, e, {str(path)!r}, {fmt!r})")
        subprocess.run([sys.executable, "-c", code], check=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--xlsx-rows", type=int, default=100_000)
    parser.add_argument("--json-rows", type=int, default=300_000)
    args = parser.parse_args()
    VAR.mkdir(parents=True, exist_ok=True)
    setup_django()
    fresh_database()

    csv_path = make_file(args.rows, "csv", 1)
    seconds, peak, batch = ingest(csv_path, args.workers)
    rate = args.rows / seconds
    bare, copied = bare_copy_rate(batch)
    extra = {"rows": args.rows, "workers": args.workers, "seconds": round(seconds, 2),
             "accepted": batch.accepted, "rejected": batch.rejected, "timings": batch.timings}  # type: ignore[attr-defined]
    emit("ingest_csv", "rows_per_s", rate, "rows/s", limit=0.4 * bare, ratio=rate / (0.4 * bare),
         bare_copy_rows_per_s=round(bare), bare_copy_rows=copied, **extra)
    emit("ingest_csv", "peak_rss", peak / 2**20, "MiB", limit=1536, ratio=1536 / (peak / 2**20),
         note="ratio = limit / value: above 1 is within budget")

    xlsx_path = make_file(args.xlsx_rows, "xlsx", 2)
    seconds, _, batch = ingest(xlsx_path, args.workers)
    emit("ingest_xlsx", "rows_per_s", args.xlsx_rows / seconds, "rows/s", limit=10_000,
         ratio=args.xlsx_rows / seconds / 10_000, rows=args.xlsx_rows, seconds=round(seconds, 2),
         timings=batch.timings)  # type: ignore[attr-defined]

    for fmt in ("ndjson", "json"):
        json_path = make_file(args.json_rows, fmt, 3)
        seconds, _, batch = ingest(json_path, args.workers)
        emit(f"ingest_{fmt}", "rows_per_s", args.json_rows / seconds, "rows/s", limit=30_000,
             ratio=args.json_rows / seconds / 30_000, rows=args.json_rows, seconds=round(seconds, 2),
             timings=batch.timings)  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
