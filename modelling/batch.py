"""Batch scoring: every current record without a current prediction (all of them when the champion
changes), in chunks, stored by COPY, with a Parquet export under ``predictions/``."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings
from django.core.files import File
from django.core.files.storage import storages
from django.db import connection
from django.db.models import OuterRef, Q, Subquery
from django.db.models.expressions import RawSQL
from django.utils import timezone

from ingestion.models import SurveyRecord
from rtv.bulk import int_array
from rtv.locks import exclusive
from rtv.services import pipeline_run
from rtv.storage import area_path

from . import serving
from .models import Prediction

log = logging.getLogger(__name__)

EXPORT_COLUMNS = ["record_id", "household_id", "model_version_id", "variant", "bucket", "probability_vulnerable",
                  "predicted_vulnerable", "predicted_status", "status_probabilities", "margin", "borderline",
                  "prediction_set", "reasons", "created_at"]


def stale_records(*, everything: bool = False, record_ids: list[int] | None = None) -> Any:
    """Current records whose latest answer is not their answering model's (one query to list).

    A record's answer is its newest prediction that is not a shadow's (what the household view
    shows).  It is current only when the model that answers the record now gave it: after a
    rollback, or once an experiment ends or ramps, a household still showing the old model's
    answer is stale, even though the answering model may have scored it before."""
    qs = SurveyRecord.objects.filter(superseded_by__isnull=True)
    if record_ids is not None:
        qs = qs.filter(pk__in=record_ids)
    if everything:
        return qs
    serving.forget()  # the batch job always asks the registry afresh
    exp = serving.active_experiment()
    champ = exp.champion if exp is not None else serving.champion()
    if champ is None:
        raise serving.NoChampion("no model has been promoted to champion yet")
    answering = [champ.pk] + ([exp.challenger_id] if exp is not None and not exp.shadow else [])
    latest = (Prediction.objects.filter(record=OuterRef("pk")).exclude(variant=Prediction.Variant.SHADOW)
              .order_by("-created_at", "-pk").values("model_version_id")[:1])
    qs = qs.annotate(answered_by=Subquery(latest))
    unanswered = Q(answered_by__isnull=True) | ~Q(answered_by__in=answering)
    if exp is None or exp.shadow:
        return qs.filter(unanswered)
    # An A/B test: a record's answer is current when it is its own arm's.  The champion's answer for
    # a household the experiment gives the challenger (scored before it started, or before a ramp) is
    # stale, and so is the reverse.
    rows = list(qs.filter(answered_by__in=answering).values_list("pk", "household__household_id", "answered_by"))
    arms = serving.plan([hid for _, hid, _ in rows]).answer
    wrong = [pk for (pk, _, by), arm in zip(rows, arms, strict=True) if by != arm.pk]
    if not wrong:
        return qs.filter(unanswered)
    listed = RawSQL("SELECT unnest(%s::bigint[])", [int_array(wrong)]) if connection.vendor == "postgresql" else wrong
    return qs.filter(unanswered | Q(pk__in=listed))  # (half the records at a test's start: one array)


def _by_ids(ids: list[int]) -> Any:
    """Records by id; on PostgreSQL as one array parameter (50,000 ``IN`` placeholders cost ~1 s to
    compose and parse)."""
    if connection.vendor == "postgresql":
        return SurveyRecord.objects.filter(pk__in=RawSQL("SELECT unnest(%s::bigint[])", [int_array(ids)])).order_by("pk")
    return SurveyRecord.objects.filter(pk__in=ids).order_by("pk")


class Busy(Exception):
    """Another batch run holds the lock and ``wait=False`` was asked."""


def predictions_batch(*, everything: bool = False, record_ids: list[int] | None = None, chunk: int | None = None,
                      export: bool = True, wait: bool = True) -> dict[str, Any]:
    """Score stale records (of ``record_ids`` when given) in chunks; returns counts, timings and the
    export's storage key.  Safe to run twice: what is current is skipped.

    On PostgreSQL, outside a transaction, the stages overlap: the next chunk is read and the last
    two written, each on its own thread and connection, while this one is scored (reading and
    writing are mostly the database's work, on another core).  Each chunk's write commits on its
    own, as it does in sequence."""
    chunk = chunk or settings.RTV_PREDICT_CHUNK_ROWS
    if chunk < 1:
        raise ValueError(f"a chunk is a positive number of rows, not {chunk}")
    if not everything:
        serving.forget()  # asked afresh, as stale_records asks
        if serving.active_experiment() is None and serving.champion() is None:
            # Before any run is recorded: no champion yet is the normal state of a new platform
            # (every device submission asks), not a failed job.
            raise serving.NoChampion("no model has been promoted to champion yet")
    # One run at a time: two overlapping runs (the nightly job and a retrain's scoring) would read
    # the same stale records and score each twice.  A second run waits, then finds them current.
    # The export streams to a temporary file, not to memory, whatever the row count.
    # ``wait=False`` (a device submission's scoring, behind a nightly run of an hour): raise Busy at
    # once, and let the caller come back later rather than hold a worker.
    with exclusive("modelling.predict_batch", wait=wait) as mine:
        if not mine:
            raise Busy("another batch scoring run is under way")
        return _run(everything=everything, record_ids=record_ids, chunk=chunk, export=export)


def _run(*, everything: bool, record_ids: list[int] | None, chunk: int, export: bool) -> dict[str, Any]:
    with pipeline_run("predict_batch") as run, tempfile.TemporaryFile() as sink:
        t0 = time.perf_counter()
        ids = list(stale_records(everything=everything, record_ids=record_ids).order_by("pk")
                   .values_list("pk", flat=True))
        parts = [ids[start:start + chunk] for start in range(0, len(ids), chunk)]
        timings = {"read": 0.0, "score": 0.0, "write": 0.0}
        fields = _fields_in_play()
        overlap = len(parts) > 1 and connection.vendor == "postgresql" and not connection.in_atomic_block
        written, writer = (_overlapped if overlap else _in_sequence)(parts, timings, sink if export else None, fields)
        path = None
        if writer is not None:
            writer.close()
            sink.seek(0)
            stamp = timezone.now()
            path = storages["default"].save(area_path("predictions", f"predictions-{stamp:%Y%m%dT%H%M%S}.parquet"),
                                            File(sink))
        seconds = time.perf_counter() - t0
        run.counts = {"scored": written, "export": path, "seconds": round(seconds, 2), "overlapped": overlap,
                      **{k: round(v, 2) for k, v in timings.items()}}
        log.info("batch scoring done", extra=run.counts)
    return {"scored": written, "export": path, "seconds": seconds, "timings": timings, "overlapped": overlap}


def _fields_in_play() -> list[str] | None:
    """The survey fields the answering models read (champion, and an experiment's challenger or
    shadow): the batch reads only those (about half the columns: no money, label or derived field
    enters a model).  None, every field, when no model answers yet (scoring then says so)."""
    exp = serving.active_experiment()
    champ = exp.champion if exp is not None else serving.champion()
    if champ is None:
        return None
    return serving.scoring_fields([champ, *([exp.challenger] if exp is not None else [])])


def _read(ids: list[int], timings: dict[str, float], fields: list[str] | None = None) -> Any:
    t = time.perf_counter()
    frame = serving.records_frame(_by_ids(ids), fields=fields)
    timings["read"] += time.perf_counter() - t
    return frame


def _score(frame: Any, timings: dict[str, float]) -> Any:
    t = time.perf_counter()
    out, _ = serving.predictions_frame(frame, household_ids=frame["_household_id"].tolist(),
                                       record_ids=frame["_record"].tolist(), source=Prediction.Source.BATCH, store=False)
    timings["score"] += time.perf_counter() - t
    return out


_timings_lock = threading.Lock()  # writes run on two threads at once


def _write(out: Any, timings: dict[str, float]) -> None:
    t = time.perf_counter()
    serving.predictions_write(out)
    with _timings_lock:
        timings["write"] += time.perf_counter() - t


def _export(out: Any, sink: Any, writer: pq.ParquetWriter | None, timings: dict[str, float]) -> pq.ParquetWriter:
    """Append the chunk to the Parquet export: the frame that was stored, so file and table agree."""
    t = time.perf_counter()
    table = pa.Table.from_pandas(out[EXPORT_COLUMNS], preserve_index=False)
    if writer is None:
        writer = pq.ParquetWriter(sink, table.schema)
    writer.write_table(table.cast(writer.schema))
    timings["export"] = timings.get("export", 0.0) + time.perf_counter() - t
    return writer


def _answered(out: Any) -> int:
    """Records scored: a shadow experiment's second opinion on a record is not another record."""
    return int((out["variant"] != Prediction.Variant.SHADOW).sum())


def _in_sequence(parts: list[list[int]], timings: dict[str, float], sink: Any,
                 fields: list[str] | None) -> tuple[int, pq.ParquetWriter | None]:
    written, writer = 0, None
    for ids in parts:
        out = _score(_read(ids, timings, fields), timings)
        _write(out, timings)
        written += _answered(out)
        if sink is not None:
            writer = _export(out, sink, writer, timings)
    return written, writer


def _on_own_connection(fn: Any, *args: Any) -> Any:
    """Run in a pool thread with the thread's own connection, closed after (none outlives the job)."""
    try:
        return fn(*args)
    finally:
        connection.close()


# Chunks written at once, each on its own connection: a write is mostly the database's work (COPY,
# foreign-key checks, indexes), on another core, and it is the longest stage.  Two in flight with
# chunks of 25k gave 42.7k rows/s against 36.8k for one with 50k (100k records, 3 runs each,
# alternating).  A third would only contend for the same two cores.
WRITES_IN_FLIGHT = 2


def _overlapped(parts: list[list[int]], timings: dict[str, float], sink: Any,
                fields: list[str] | None) -> tuple[int, pq.ParquetWriter | None]:
    """Read chunk k+1 and write chunks k-1 and k-2 while chunk k is scored.  At most one read and
    ``WRITES_IN_FLIGHT`` writes are under way, so memory holds four chunks at most.  Writes commit
    each on its own, in any order (no two chunks share a record).  A failure in any stage stops
    the job."""
    written, writer = 0, None
    with ThreadPoolExecutor(1, thread_name_prefix="predict-read") as reads, \
            ThreadPoolExecutor(WRITES_IN_FLIGHT, thread_name_prefix="predict-write") as writes:
        reading = reads.submit(_on_own_connection, _read, parts[0], timings, fields)
        writing: deque[Future[None]] = deque()
        for k in range(len(parts)):
            frame = reading.result()
            if k + 1 < len(parts):
                reading = reads.submit(_on_own_connection, _read, parts[k + 1], timings, fields)
            out = _score(frame, timings)
            while len(writing) >= WRITES_IN_FLIGHT:
                writing.popleft().result()
            writing.append(writes.submit(_on_own_connection, _write, out, timings))
            written += _answered(out)
            if sink is not None:
                writer = _export(out, sink, writer, timings)
        while writing:
            writing.popleft().result()
    return written, writer
