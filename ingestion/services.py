"""The one write path for survey data, whatever the door (command, upload, partner file, device).

read -> map headers through the contract -> validate (quality.engine) -> label -> store by COPY.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.utils import timezone

from features.labels import income_per_day, is_vulnerable, progress_status
from quality.engine import validate_frame
from rtv import contract
from rtv.bulk import copy_frame
from rtv.selectors import current_schema
from rtv.services import audit_record
from rtv.storage import area_path

from .mapping import apply_mapping, map_headers
from .models import Household, IngestionBatch, RowIssue, SurveyRecord
from .readers import RawTable, ReadError, detect_format, read_table

log = logging.getLogger(__name__)

RECORD_COLUMNS = [
    "household_id", "batch_id", "row_number", "survey_round", "version", "content_hash", "district", "cluster",
    "village", "household_size", "data", "raw", "income_per_day", "progress_status", "vulnerable", "review_status",
    "warning_count", "form_version", "device_id", "received_at",
]
RECORD_TEXT_COLUMNS = ["survey_round", "cluster", "progress_status", "review_status", "form_version", "device_id"]
ISSUE_COLUMNS = ["batch_id", "record_id", "row_number", "household_id", "field", "column", "rule", "severity",
                 "value", "message"]


@dataclass
class IngestSummary:
    batch: IngestionBatch

    def as_dict(self) -> dict[str, Any]:
        b = self.batch
        return {
            "ingestion_id": str(b.id),
            "rows": b.row_count,
            "accepted": b.accepted,
            "warnings": b.warnings,
            "rejected": b.rejected,
            "duplicates": b.duplicates,
            "dry_run": b.dry_run,
            "label_counts": b.label_counts,
        }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _json_lines(frame: pd.DataFrame) -> pd.Series:
    """One compact JSON object per row, built by pandas' C writer (no per-row Python)."""
    if frame.empty:
        return pd.Series([], dtype=object)
    text = frame.to_json(orient="records", lines=True, double_precision=15)
    lines = text.rstrip("\n").split("\n")
    return pd.Series(lines, index=frame.index, dtype=object)


def ingest_file(path: str | Path, *, user: AbstractBaseUser | AnonymousUser | None = None,
                channel: str = IngestionBatch.Channel.COMMAND, source: str = "", dry_run: bool = False,
                fmt: str | None = None, original_name: str | None = None) -> IngestionBatch:
    """Ingest one file end to end and return its batch (counts, label counts, timings)."""
    path = Path(path)
    t0 = time.perf_counter()
    fmt = fmt or detect_format(original_name or path.name)
    batch = IngestionBatch.objects.create(
        channel=channel, source=source, format=fmt, original_name=original_name or path.name,
        sha256=_sha256(path), size_bytes=path.stat().st_size, dry_run=dry_run,
        created_by=user if user is not None and user.is_authenticated else None,
        status=IngestionBatch.Status.RUNNING,
    )
    try:
        if not dry_run:
            with path.open("rb") as fh:
                batch.file_key = default_storage.save(area_path("raw", f"{batch.id}/{batch.original_name}"), File(fh))
        table = read_table(path, fmt)
        timings = {"read_s": round(time.perf_counter() - t0, 3)}
        ingest_table(table, batch=batch, user=user, timings=timings, started=t0)
    except ReadError as exc:
        batch.status = IngestionBatch.Status.FAILED
        batch.error = f"{exc.code}: {exc}"
        batch.finished_at = timezone.now()
        batch.save(update_fields=["status", "error", "finished_at", "file_key"])
        raise
    return batch


def ingest_table(table: RawTable, *, batch: IngestionBatch, user: AbstractBaseUser | AnonymousUser | None = None,
                 timings: dict[str, float] | None = None, started: float | None = None) -> IngestionBatch:
    timings = dict(timings or {})
    t0 = started or time.perf_counter()
    schema = current_schema()
    mapping = map_headers(table.headers, schema.fields)
    raw = apply_mapping(table.frame, mapping)
    n = len(raw)

    t = time.perf_counter()
    result = validate_frame(raw, schema.fields, tol_abs=settings.RTV_IDENTITY_TOLERANCE_ABS,
                            tol_rel=settings.RTV_IDENTITY_TOLERANCE_REL)
    typed, issues = result.typed, result.issues
    timings["validate_s"] = round(time.perf_counter() - t, 3)

    # Likely duplicates: the same household id more than once in this file (a warning to review,
    # never an automatic merge: the real extract has 83 such rows).
    if "household_id" in typed:
        hid = typed["household_id"]
        dup_mask = hid.notna() & hid.duplicated(keep=False)
        if dup_mask.any():
            idx = np.flatnonzero(dup_mask.to_numpy())
            issues = pd.concat([issues, pd.DataFrame({
                "row": idx, "field": "household_id", "rule": "duplicate_household", "severity": "warning",
                "value": hid.to_numpy()[idx].astype(str), "message": "household_id appears more than once in this file",
            })], ignore_index=True)
        duplicates = int(dup_mask.sum() - hid[dup_mask].nunique()) if dup_mask.any() else 0
    else:
        duplicates = 0

    error_rows = np.zeros(n, dtype=bool)
    error_rows[result.error_rows()] = True
    if len(issues):
        error_rows[np.unique(issues.loc[issues["severity"] == "error", "row"].to_numpy(dtype=np.int64))] = True
    warn_counts = np.bincount(issues.loc[issues["severity"] == "warning", "row"].to_numpy(dtype=np.int64),
                              minlength=n) if len(issues) else np.zeros(n, dtype=np.int64)
    accepted_mask = ~error_rows

    per_day = income_per_day(typed)
    status = progress_status(per_day)
    vulnerable = is_vulnerable(status)
    label_counts = {k: int(v) for k, v in status[accepted_mask & (status != "").to_numpy()].value_counts().items()}

    header_by_field = {str(c["field"]): str(c["header"]) for c in mapping.columns if c["field"]}
    batch.row_count = n
    batch.column_count = len(table.headers)
    batch.header_mapping = mapping.columns
    batch.schema_version = schema.version
    batch.accepted = int(accepted_mask.sum())
    batch.rejected = int(error_rows.sum())
    batch.warnings = int(((warn_counts > 0) & accepted_mask).sum())
    batch.duplicates = duplicates
    batch.label_counts = label_counts

    t = time.perf_counter()
    with transaction.atomic():
        record_ids = None
        if not batch.dry_run and batch.accepted:
            record_ids = _store_records(batch, raw, typed, per_day, status, vulnerable, warn_counts, accepted_mask)
        _store_issues(batch, issues, typed, header_by_field, record_ids)
        timings["store_s"] = round(time.perf_counter() - t, 3)
        timings["total_s"] = round(time.perf_counter() - t0, 3)
        batch.timings = timings
        batch.status = IngestionBatch.Status.SUCCEEDED
        batch.finished_at = timezone.now()
        batch.save()
        audit_record(actor=user, action="ingestion.completed", obj=batch,
                     changes={"accepted": batch.accepted, "rejected": batch.rejected, "dry_run": batch.dry_run})
    log.info("ingestion finished", extra={"ingestion_id": str(batch.id), "rows": n, "accepted": batch.accepted,
                                          "rejected": batch.rejected, "timings": timings})
    return batch


def _upsert_households(typed: pd.DataFrame) -> pd.Series:
    """Household pk per row (rows must all carry a household_id)."""
    hh = typed[["household_id", "district", "village"]].drop_duplicates("household_id")
    ids = hh["household_id"].tolist()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {Household._meta.db_table} (household_id, district, village, created_at) "
                "SELECT h, coalesce(d, ''), coalesce(v, ''), now() FROM unnest(%s::text[], %s::text[], %s::text[]) "
                "AS t(h, d, v) ON CONFLICT (household_id) DO NOTHING",
                [ids, hh["district"].tolist(), hh["village"].tolist()],
            )
            cursor.execute(f"SELECT household_id, id FROM {Household._meta.db_table} WHERE household_id = ANY(%s)",
                           [ids])
            pk_by_id = dict(cursor.fetchall())
    else:
        Household.objects.bulk_create(
            [Household(household_id=h, district=d or "", village=v or "") for h, d, v in hh.itertuples(index=False)],
            ignore_conflicts=True, batch_size=1000)
        pk_by_id = {}
        for start in range(0, len(ids), 500):
            pk_by_id.update(Household.objects.filter(household_id__in=ids[start:start + 500])
                            .values_list("household_id", "id"))
    return typed["household_id"].map(pk_by_id)


def _store_records(batch: IngestionBatch, raw: pd.DataFrame, typed: pd.DataFrame, per_day: pd.Series,
                   status: pd.Series, vulnerable: pd.Series, warn_counts: np.ndarray,
                   accepted_mask: np.ndarray) -> pd.Series:
    keep = accepted_mask
    t = typed[keep]
    survey_cols = [f.name for f in contract.SURVEY_FIELDS if f.name in t.columns]
    data_json = _json_lines(t[survey_cols])
    raw_json = _json_lines(raw[keep][[c for c in raw.columns if c in survey_cols]])
    hashes = data_json.map(lambda s: hashlib.sha256(s.encode()).hexdigest())
    now = timezone.now()
    rows = pd.DataFrame({
        "household_id": _upsert_households(t),
        "batch_id": str(batch.id),
        "row_number": np.flatnonzero(keep) + 2,
        "survey_round": "",
        "version": 1,
        "content_hash": hashes,
        "district": t.get("district"),
        "cluster": t.get("cluster"),
        "village": t.get("village"),
        "household_size": t["household_size"].astype("Int64") if "household_size" in t else None,
        "data": data_json,
        "raw": raw_json,
        "income_per_day": per_day[keep],
        "progress_status": status[keep],
        "vulnerable": vulnerable[keep],
        "review_status": SurveyRecord.ReviewStatus.RECEIVED,
        "warning_count": warn_counts[keep],
        "form_version": "",
        "device_id": "",
        "received_at": now,
    }, index=t.index)
    if "cluster" not in t:
        rows["cluster"] = ""
    copy_frame(SurveyRecord, rows, RECORD_COLUMNS, not_null_text=RECORD_TEXT_COLUMNS)
    ids = dict(SurveyRecord.objects.filter(batch=batch).values_list("row_number", "id"))
    return pd.Series(ids, dtype="Int64")


def _store_issues(batch: IngestionBatch, issues: pd.DataFrame, typed: pd.DataFrame, header_by_field: dict[str, str],
                  record_ids: pd.Series | None) -> None:
    if issues.empty:
        return
    rows = issues.sort_values(["row", "severity", "field"], kind="stable").reset_index(drop=True)
    row_number = rows["row"].to_numpy(dtype=np.int64) + 2
    hid = typed["household_id"].to_numpy(dtype=object)[rows["row"].to_numpy(dtype=np.int64)] \
        if "household_id" in typed else np.full(len(rows), None)
    frame = pd.DataFrame({
        "batch_id": str(batch.id),
        "record_id": pd.Series(row_number).map(record_ids) if record_ids is not None else None,
        "row_number": row_number,
        "household_id": hid,
        "field": rows["field"],
        "column": rows["field"].map(header_by_field).fillna(""),
        "rule": rows["rule"],
        "severity": rows["severity"],
        "value": rows["value"],
        "message": rows["message"],
    })
    copy_frame(RowIssue, frame, ISSUE_COLUMNS,
               not_null_text=["household_id", "field", "column", "value", "message"])
