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


def _serve(inbox: mp.Queue, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """A long-lived worker process, like a Celery worker: set up once, then plan batches or
    process chunk lists as they arrive; reports its peak memory when told to stop."""
    setup_django()
    from ingestion.services import batch_plan, chunk_process

    out.put(("ready", 0, None))
    while True:
        job, arg = inbox.get()
        if job == "plan":
            out.put(("planned", 0, batch_plan(arg, enqueue=False)))
        elif job == "chunks":
            for cid in arg:
                chunk_process(cid)  # claims make it safe for workers to race over the same list
            out.put(("done", 0, None))
        else:
            out.put(("peak", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, None))
            return


class Workers:
    """Spawned (fresh memory, no inherited pages) and warmed up before any clock starts."""

    def __init__(self, n: int) -> None:
        ctx = mp.get_context("spawn")
        self.out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
        self.inboxes = [ctx.Queue() for _ in range(n)]
        self.procs = [ctx.Process(target=_serve, args=(q, self.out)) for q in self.inboxes]
        for p in self.procs:
            p.start()
        for _ in self.procs:
            self.out.get()

    def plan(self, batch_id: str) -> list[int]:
        self.inboxes[0].put(("plan", batch_id))
        return list(self.out.get()[2])

    def run(self, chunk_ids: list[int]) -> None:
        n = len(self.inboxes)
        for i, q in enumerate(self.inboxes):
            q.put(("chunks", chunk_ids[i::n] + chunk_ids))
        for _ in self.inboxes:
            self.out.get()

    def stop(self) -> int:
        for q in self.inboxes:
            q.put(("stop", None))
        peaks = [self.out.get()[1] for _ in self.inboxes]
        for p in self.procs:
            p.join()
        return max(peaks)


def ingest(path: Path, workers: Workers) -> tuple[float, object]:
    """Seconds end to end: keep the original, hash, plan, validate and store every chunk, finalise."""
    from ingestion.models import IngestionBatch
    from ingestion.services import batch_create

    t0 = time.perf_counter()
    with path.open("rb") as fh:
        batch = batch_create(fh=fh, original_name=path.name, force=True)
    workers.run(workers.plan(str(batch.pk)))
    seconds = time.perf_counter() - t0
    batch = IngestionBatch.objects.get(pk=batch.pk)
    assert batch.status == "succeeded", batch.status
    return seconds, batch


def bare_copy_rate(batch: object, streams: int = 1) -> tuple[float, int]:
    """Rows/s of a bare COPY FROM of exactly the rows the ingestion stored, into the same tables
    (records and their typed values), with nothing else done.  ``streams``: that many connections
    at once, each copying its share of the records then their values (as many as the ingestion's
    workers: what the database can take on this machine, not what one connection can)."""
    from concurrent.futures import ThreadPoolExecutor

    import psycopg
    from django.conf import settings
    from django.db import connection

    from ingestion.models import SURVEY_VALUE_FIELDS, SurveyRecord, SurveyValues
    from ingestion.services import RECORD_COLUMNS

    rec_cols = ", ".join(f'"{SurveyRecord._meta.get_field(c).column}"' for c in RECORD_COLUMNS)
    val_cols = ", ".join(f'"{c}"' for c in SURVEY_VALUE_FIELDS)
    rec_table, val_table = SurveyRecord._meta.db_table, SurveyValues._meta.db_table
    offset = 10**9  # new ids for the copies: the same rows, again, under fresh keys (deleted after)
    dumps = {  # part k of ``streams``: the records whose id is k modulo streams, and their values
        "records": (f"SELECT id + {offset}, {rec_cols} FROM {rec_table} WHERE batch_id = %s AND id < {offset} "
                    f"AND mod(id, {streams}) = %s",
                    f"COPY {rec_table} (id, {rec_cols}) FROM STDIN WITH (FORMAT csv)"),
        "values": (f"SELECT v.record_id + {offset}, {', '.join('v.' + c for c in val_cols.split(', '))} FROM {val_table} v "
                   f"JOIN {rec_table} r ON r.id = v.record_id WHERE r.batch_id = %s AND r.id < {offset} "
                   f"AND mod(r.id, {streams}) = %s",
                   f"COPY {val_table} (record_id, {val_cols}) FROM STDIN WITH (FORMAT csv)"),
    }
    parts: list[dict[str, bytes]] = []
    for k in range(streams):
        parts.append({})
        for name, (select, _) in dumps.items():
            sink = bytearray()
            with connection.cursor() as cur, cur.cursor.copy(
                    f"COPY ({select}) TO STDOUT WITH (FORMAT csv)", [str(batch.pk), k]) as copy:  # type: ignore[attr-defined]
                for data in copy:
                    sink += data
            parts[k][name] = bytes(sink)
    rows = SurveyRecord.objects.filter(batch_id=batch.pk, pk__lt=offset).count()  # type: ignore[attr-defined]
    db = settings.DATABASES["default"]
    dsn = (f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432} user={db['USER'] or 'postgres'} "
           f"dbname={db['NAME']}")

    def copy_part(part: dict[str, bytes]) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:  # each COPY commits: its values find their records
            for name, (_, copy_sql) in dumps.items():
                with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                    view = memoryview(part[name])
                    for start in range(0, len(view), 1 << 20):
                        copy.write(view[start:start + (1 << 20)])

    with ThreadPoolExecutor(streams) as pool:
        t0 = time.perf_counter()
        list(pool.map(copy_part, parts))
        seconds = time.perf_counter() - t0
    # The copies go, so the next figure is measured on the table the ingestion would find.
    with connection.cursor() as cur:
        cur.execute(f"DELETE FROM {val_table} WHERE record_id >= %s", [offset])
        cur.execute(f"DELETE FROM {rec_table} WHERE id >= %s", [offset])
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


def csv_figures(csv_path: Path, args: argparse.Namespace) -> None:
    pool = Workers(args.workers)  # fresh processes: their peak memory is the 1M-row file's alone
    seconds, batch = ingest(csv_path, pool)
    peak = pool.stop()
    rate = args.rows / seconds
    bare, copied = bare_copy_rate(batch)
    parallel, _ = bare_copy_rate(batch, streams=args.workers)
    extra = {"rows": args.rows, "workers": args.workers, "seconds": round(seconds, 2),
             "accepted": batch.accepted, "rejected": batch.rejected, "timings": batch.timings}  # type: ignore[attr-defined]
    emit("ingest_csv", "rows_per_s", rate, "rows/s", limit=0.4 * bare, ratio=rate / (0.4 * bare),
         bare_copy_rows_per_s=round(bare), bare_copy_rows=copied, bare_copy_parallel_rows_per_s=round(parallel),
         note=f"limit = 40% of one connection's bare COPY; bare_copy_parallel: {args.workers} connections at once",
         **extra)
    emit("ingest_csv", "peak_rss", peak / 2**20, "MiB", limit=1536, ratio=1536 / (peak / 2**20),
         note="ratio = limit / value: above 1 is within budget")



def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--xlsx-rows", type=int, default=100_000)
    parser.add_argument("--json-rows", type=int, default=300_000)
    parser.add_argument("--skip-csv", action="store_true", help="only the XLSX and JSON figures")
    args = parser.parse_args()
    VAR.mkdir(parents=True, exist_ok=True)
    setup_django()
    fresh_database()

    csv_path = None if args.skip_csv else make_file(args.rows, "csv", 1)
    xlsx_path = make_file(args.xlsx_rows, "xlsx", 2)
    json_paths = {fmt: make_file(args.json_rows, fmt, 3) for fmt in ("ndjson", "json")}

    if csv_path is not None:
        csv_figures(csv_path, args)
    pool = Workers(args.workers)
    seconds, batch = ingest(xlsx_path, pool)
    emit("ingest_xlsx", "rows_per_s", args.xlsx_rows / seconds, "rows/s", limit=10_000,
         ratio=args.xlsx_rows / seconds / 10_000, rows=args.xlsx_rows, seconds=round(seconds, 2),
         timings=batch.timings)  # type: ignore[attr-defined]
    for fmt, json_path in json_paths.items():
        seconds, batch = ingest(json_path, pool)
        # The ceiling beside the figure: the same rows COPYed bare into the same tables, by one
        # connection and by as many as there are workers.
        bare, _ = bare_copy_rate(batch)
        parallel, _ = bare_copy_rate(batch, streams=args.workers)
        emit(f"ingest_{fmt}", "rows_per_s", args.json_rows / seconds, "rows/s", limit=30_000,
             ratio=args.json_rows / seconds / 30_000, rows=args.json_rows, seconds=round(seconds, 2),
             bare_copy_rows_per_s=round(bare), bare_copy_parallel_rows_per_s=round(parallel),
             timings=batch.timings)  # type: ignore[attr-defined]
    pool.stop()


if __name__ == "__main__":
    main()
