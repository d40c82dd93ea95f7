"""Batch scoring: every current record without a current prediction (all of them when the champion
changes), in chunks, stored by COPY, with a Parquet export under ``predictions/``."""

from __future__ import annotations

import logging
import tempfile
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings
from django.core.files import File
from django.core.files.storage import storages
from django.db import connection
from django.db.models import Exists, OuterRef
from django.db.models.expressions import RawSQL
from django.utils import timezone

from ingestion.models import SurveyRecord
from rtv.services import pipeline_run
from rtv.storage import area_path

from . import serving
from .models import Prediction

log = logging.getLogger(__name__)

EXPORT_COLUMNS = ["record_id", "household_id", "model_version_id", "variant", "bucket", "probability_vulnerable",
                  "predicted_vulnerable", "predicted_status", "status_probabilities", "margin", "borderline",
                  "prediction_set", "reasons", "created_at"]


def stale_records(*, everything: bool = False, record_ids: list[int] | None = None) -> Any:
    """Current records whose answering model has not scored them yet (one query to list)."""
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
    current = Prediction.objects.filter(record=OuterRef("pk"), model_version_id__in=answering).exclude(
        variant=Prediction.Variant.SHADOW)
    return qs.filter(~Exists(current))


def _by_ids(ids: list[int]) -> Any:
    """Records by id; on PostgreSQL as one array parameter (50,000 ``IN`` placeholders cost ~1 s to
    compose and parse)."""
    if connection.vendor == "postgresql":
        return SurveyRecord.objects.filter(pk__in=RawSQL("SELECT unnest(%s::bigint[])", [ids])).order_by("pk")
    return SurveyRecord.objects.filter(pk__in=ids).order_by("pk")


def predictions_batch(*, everything: bool = False, record_ids: list[int] | None = None, chunk: int | None = None,
                      export: bool = True) -> dict[str, Any]:
    """Score stale records (of ``record_ids`` when given) in chunks; returns counts, timings and the
    export's storage key.  Safe to run twice: what is current is skipped."""
    chunk = chunk or settings.RTV_PREDICT_CHUNK_ROWS
    # The export streams to a temporary file, not to memory, whatever the row count.
    with pipeline_run("predict_batch") as run, tempfile.TemporaryFile() as sink:
        t0 = time.perf_counter()
        ids = list(stale_records(everything=everything, record_ids=record_ids).order_by("pk")
                   .values_list("pk", flat=True))
        written = 0
        timings = {"read": 0.0, "score_and_write": 0.0}
        writer: pq.ParquetWriter | None = None
        for start in range(0, len(ids), chunk):
            t = time.perf_counter()
            frame = serving.records_frame(_by_ids(ids[start:start + chunk]))
            timings["read"] += time.perf_counter() - t
            t = time.perf_counter()
            out, _ = serving.predictions_frame(frame, household_ids=frame["_household_id"].tolist(),
                                               record_ids=frame["_record"].tolist(), source=Prediction.Source.BATCH)
            timings["score_and_write"] += time.perf_counter() - t
            written += len(frame)
            if export:
                # The export is the frame that was stored, so the file and the table cannot disagree.
                t = time.perf_counter()
                table = pa.Table.from_pandas(out[EXPORT_COLUMNS], preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(sink, table.schema)
                writer.write_table(table.cast(writer.schema))
                timings["export"] = timings.get("export", 0.0) + time.perf_counter() - t
        path = None
        if writer is not None:
            writer.close()
            sink.seek(0)
            stamp = timezone.now()
            path = storages["default"].save(area_path("predictions", f"predictions-{stamp:%Y%m%dT%H%M%S}.parquet"),
                                            File(sink))
        seconds = time.perf_counter() - t0
        run.counts = {"scored": written, "export": path, "seconds": round(seconds, 2),
                      **{k: round(v, 2) for k, v in timings.items()}}
        log.info("batch scoring done", extra=run.counts)
    return {"scored": written, "export": path, "seconds": seconds, "timings": timings}
