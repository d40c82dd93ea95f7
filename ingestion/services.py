"""The one write path for survey files, whatever the door (command, upload, partner inbox).

create batch (file kept under raw/, sha256) -> plan (read, map headers, split into chunks under
temp/) -> process each chunk (validate, label, store records and issues by COPY, in one
transaction with the chunk's ``done``) -> finalise the batch once every chunk is done.

Chunks are claimed with a conditional update and a lease, so any number of workers share a file,
and a worker killed halfway leaves nothing behind: its transaction rolls back and the sweeper
hands the chunk out again when the lease expires.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, Subquery, Sum
from django.db.models.expressions import RawSQL
from django.utils import timezone

from features.labels import income_per_day, is_vulnerable, overflowing_income, progress_status
from quality.duplicates import answers_hashes, stored_matches
from quality.engine import WITHHELD, WITHHELD_FIELDS, validate_frame
from quality.reference import stored_reference
from quality.rules import NEAR_DUPLICATE_IGNORE, active_rules
from rtv.bulk import copy_frame, int_array
from rtv.fields import encrypt_value
from rtv.models import OutboxMessage
from rtv.outbox import outbox_after_commit, outbox_enqueue
from rtv.selectors import current_schema
from rtv.services import audit_record
from rtv.storage import area_path

from .mapping import map_headers
from .models import (
    STORED_TEXT_LIMITS,
    SURVEY_VALUE_FIELDS,
    Household,
    IngestionBatch,
    IngestionChunk,
    Partner,
    RowIssue,
    SurveyRecord,
    SurveyValues,
)
from .readers import RAGGED_ROWS, ReadError, detect_format, iter_tables

log = logging.getLogger(__name__)

RECORD_COLUMNS = [
    "household_id", "batch_id", "row_number", "survey_round", "version", "content_hash", "answers_hash", "district",
    "cluster", "village", "household_size", "income_per_day", "progress_status", "vulnerable", "review_status",
    "warning_count", "form_version", "device_id", "received_at", "auto_approved", "quality_score", "completeness",
    "validity", "consistency", "collected_at", "gps",
]
RECORD_TEXT_COLUMNS = ["survey_round", "cluster", "progress_status", "review_status", "form_version", "device_id"]
ISSUE_COLUMNS = ["batch_id", "record_id", "row_number", "household_id", "field", "column", "rule", "severity",
                 "value", "message"]
ISSUE_COLUMN_LENGTH = RowIssue._meta.get_field("column").max_length or 120  # type: ignore[union-attr]
LATE_DUPLICATE_MARGIN = timedelta(seconds=30)  # commit after the stamp, and clocks of different hosts
ACTIVE = (IngestionBatch.Status.PENDING, IngestionBatch.Status.RUNNING, IngestionBatch.Status.SUCCEEDED)
CONFLICTING_COLUMNS = "conflicting_columns"  # a chunk flag and its finding: two columns, two values for a field


class DuplicateFile(Exception):
    """The same bytes were ingested before; ``earlier`` is that batch."""

    def __init__(self, earlier: IngestionBatch) -> None:
        super().__init__(f"this file was already ingested as {earlier.pk}")
        self.earlier = earlier


class TooManyRows(Exception):
    pass


class FileNotStored(Exception):
    """Storage refused the original (the batch is not created)."""


@dataclass
class IngestSummary:
    batch: IngestionBatch

    def as_dict(self) -> dict[str, Any]:
        b = self.batch
        return {
            "ingestion_id": str(b.id),
            "status": b.status,
            "rows": b.row_count,
            "accepted": b.accepted,
            "warnings": b.warnings,
            "rejected": b.rejected,
            "duplicates": b.duplicates,
            "dry_run": b.dry_run,
            "label_counts": b.label_counts,
        }


# ---- create ---------------------------------------------------------------------------------

def _hash_and_size(fh: BinaryIO) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    for block in iter(lambda: fh.read(1 << 20), b""):
        h.update(block)
        size += len(block)
    fh.seek(0)
    return h.hexdigest(), size


def batch_create(*, fh: BinaryIO, original_name: str, user: AbstractBaseUser | AnonymousUser | None = None,
                 channel: str = IngestionBatch.Channel.COMMAND, source: str = "", dry_run: bool = False,
                 force: bool = False, partner: Partner | None = None) -> IngestionBatch:
    """Keep the original under raw/, refuse a file already ingested (unless forced), create the batch.

    The look-up and the insert are one step per file content: on PostgreSQL a transaction-scoped
    advisory lock on the sha256 makes simultaneous uploads of the same bytes wait for each other (the
    caller's transaction, when there is one, holds it to its commit), so only the first is stored."""
    fmt = detect_format(original_name)
    sha, size = _hash_and_size(fh)
    with transaction.atomic():
        earlier = None
        if not dry_run:
            _lock_file_content(sha)
            earlier = _earlier_batch(sha)
            if earlier is not None and not force:
                raise DuplicateFile(earlier)
        batch = IngestionBatch(
            channel=channel, source=source or (partner.slug if partner else ""), format=fmt,
            original_name=Path(original_name).name[:255], sha256=sha, size_bytes=size, dry_run=dry_run,
            forced=bool(force and earlier), duplicate_of=earlier, partner=partner,
            created_by=user if user is not None and user.is_authenticated else None,
        )
        # Stored under a key of our own: the sender's file name (any length, any script) is kept in
        # original_name, and only its lower-case extension, which detect_format accepted, is reused.
        key = area_path("raw", f"{batch.id}/original{Path(original_name).suffix.lower()}")
        try:
            batch.file_key = default_storage.save(key, fh)
        except OSError as exc:
            raise FileNotStored(f"The file could not be stored ({type(exc).__name__}).") from exc
        batch.save(force_insert=True)
    return batch


def _lock_file_content(sha: str) -> None:
    """Serialise batch creation per file content until the transaction ends (SQLite serialises
    writes by itself)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"ingestion.file:{sha}"])


def _earlier_batch(sha: str) -> IngestionBatch | None:
    """The first real batch of these bytes that counts against a new one: pending, running or
    succeeded, or failed after storing records (its stored chunks would be stored twice)."""
    stored = Exists(SurveyRecord.objects.filter(batch=OuterRef("pk")))
    return (IngestionBatch.objects.filter(sha256=sha, dry_run=False)
            .exclude(channel=IngestionBatch.Channel.DEVICE)  # a device request is not a file sent before
            .filter(Q(status__in=ACTIVE) | Q(stored, status=IngestionBatch.Status.FAILED))
            .order_by("created_at").first())


@contextmanager
def _local_copy(key: str) -> Iterator[Path]:
    """A local path for a stored file (the file itself on local storage; a temp copy from the cloud)."""
    # Only the storage's answer is guarded: an error raised by the caller's block (Arrow's
    # ArrowNotImplementedError is a NotImplementedError too) must reach the caller, not make this
    # generator yield a second time.
    try:
        local = Path(default_storage.path(key))
    except NotImplementedError:
        pass
    else:
        yield local
        return
    suffix = Path(key).suffix
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp, default_storage.open(key, "rb") as src:
        for block in iter(lambda: src.read(1 << 20), b""):
            tmp.write(block)
        tmp.flush()
        yield Path(tmp.name)


# ---- plan -----------------------------------------------------------------------------------

def _fail(batch_id: Any, code: str, message: str) -> None:
    IngestionBatch.objects.filter(pk=batch_id).update(status=IngestionBatch.Status.FAILED, error=f"{code}: {message}",
                                                      finished_at=timezone.now())


def _flag_file_wide(chunks: list[IngestionChunk], household_ids: list[pd.Series], villages: list[pd.Series],
                    answer_hashes: list[pd.Series]) -> int:
    """Findings that need the whole file, not one chunk: the same household id twice (the real
    extract has 83 such rows: a likely duplicate to review, never a merge), and households of one
    village with identical answers.  Stored per chunk as local row offsets; returns the number of
    surplus rows sharing an id."""
    rules = active_rules()
    masks: dict[str, np.ndarray] = {}
    duplicates = 0
    if household_ids and rules.get("household_id", "duplicate_household"):
        hid = pd.concat(household_ids, ignore_index=True)
        hid = hid.where(hid != "")
        dup = hid.notna() & hid.duplicated(keep=False)
        duplicates = int(dup.sum() - hid[dup].nunique())
        masks["duplicate_household"] = dup.to_numpy()
    if answer_hashes and rules.get("household_id", "near_duplicate"):
        both = pd.DataFrame({"v": pd.concat(villages, ignore_index=True),
                             "h": pd.concat(answer_hashes, ignore_index=True)})
        # Rows without a village (an empty line, a row not read) are rejected anyway: not duplicates.
        masks["near_duplicate"] = (both.duplicated(keep=False) & both["v"].fillna("").ne("")).to_numpy()
    for kind, mask in masks.items():
        positions = np.flatnonzero(mask)
        for chunk in chunks:
            local = positions[(positions >= chunk.start_row) & (positions < chunk.start_row + chunk.row_count)]
            if local.size:
                chunk.flag_rows[kind] = (local - chunk.start_row).tolist()
    return duplicates


def _chunk_bytes(table: pa.Table) -> bytes:
    """A planned chunk as Parquet, uncompressed: dictionary encoding already makes it small (5 MB
    for 20k rows of 75 columns against 2.4 MB with zstd), and it is written and read twice as fast."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="none")
    return buf.getvalue()


def batch_plan(batch_id: Any, *, enqueue: bool = True) -> list[int]:
    """Read and split the batch's file into chunks.  Idempotent: only a pending batch is planned."""
    t0 = time.perf_counter()
    lease = timezone.now() + timedelta(seconds=settings.RTV_PLAN_LEASE_SECONDS)
    if not IngestionBatch.objects.filter(pk=batch_id, status=IngestionBatch.Status.PENDING).update(
            status=IngestionBatch.Status.RUNNING, plan_lease_until=lease, plan_attempts=F("plan_attempts") + 1):
        return []
    batch = IngestionBatch.objects.get(pk=batch_id)
    _clear_temp(batch.pk)  # what a planner that died part-way left behind
    schema = current_schema()
    chunk_rows = settings.RTV_CHUNK_ROWS
    chunks: list[IngestionChunk] = []
    household_ids: list[pd.Series] = []
    answer_hashes: list[pd.Series] = []
    villages: list[pd.Series] = []
    try:
        with _local_copy(batch.file_key) as path:
            headers, tables = iter_tables(path, batch.format, chunk_rows)
            # A header is stored as text (the mapping, each finding's column): a NUL, which PostgreSQL
            # refuses, is shown as U+2400, as in a finding's value.
            headers = _storable(pd.Series(headers, dtype=object)).tolist()
            mapping = map_headers(headers, schema.fields)
            positions = mapping.field_positions()
            if not positions:  # every row would be lost: a title above the header, another sheet, a wrapper
                named = [h for h in headers if h]
                if not headers:  # a JSON array of no records
                    raise ReadError("empty_file", "The file has no records.")
                expected = [f.source_header or f.name for f in schema.fields if f.required][:5]
                raise ReadError("no_known_columns",
                                "No column matches a field of the survey: expected headers such as "
                                f"{', '.join(expected)}; the file's first row has "
                                f"{', '.join(named[:8]) + (' ...' if len(named) > 8 else '') if named else 'none'}. "
                                "The header must be the first row of the file.")
            extra = mapping.extra_positions()  # a second column for a field: fills the first's empty cells
            numeric = {f.name for f in schema.fields if f.type in ("integer", "decimal", "code")}
            start = 0
            for index, table in enumerate(tables):
                if start + table.num_rows > settings.RTV_MAX_UPLOAD_ROWS:
                    raise TooManyRows(f"the file has more than {settings.RTV_MAX_UPLOAD_ROWS} rows")
                # The mapped columns stay Arrow text from the reader to the chunk file: no Python
                # object per cell, and the chunk reads back exactly what a pandas round trip gave.
                mapped = mapping.select(table, positions, extra)
                raw = mapped.to_pandas()
                if "household_id" in raw:
                    household_ids.append(raw["household_id"].str.strip())
                if "village" in raw:
                    villages.append(raw["village"].str.strip())
                    answers = raw[[c for c in raw.columns if c not in NEAR_DUPLICATE_IGNORE]]
                    answer_hashes.append(pd.Series(pd.util.hash_pandas_object(answers, index=False).to_numpy()))
                key = default_storage.save(area_path("temp", f"{batch.pk}/chunk-{index:05d}.parquet"),
                                           ContentFile(_chunk_bytes(mapped)))
                chunk = IngestionChunk(batch=batch, index=index, start_row=start, row_count=table.num_rows,
                                       file_key=key)
                for name, rows in mapping.conflicts(table, positions, extra, numeric).items():
                    chunk.flag_rows[f"{CONFLICTING_COLUMNS}:{name}"] = rows
                ragged = (table.schema.metadata or {}).get(RAGGED_ROWS)
                if ragged:  # rows the reader could not line up with the header: reported by the chunk
                    chunk.flag_rows["ragged_row"] = json.loads(ragged)
                chunks.append(chunk)
                start += table.num_rows
    except ReadError as exc:
        _fail(batch_id, exc.code, str(exc))
        raise
    except TooManyRows as exc:
        _fail(batch_id, "too_many_rows", str(exc))
        raise
    except Exception as exc:  # storage, Arrow, anything: the batch says so rather than run for ever
        _fail(batch_id, "plan_failed", f"the file could not be split into chunks ({type(exc).__name__}: {exc})")
        raise
    duplicates = _flag_file_wide(chunks, household_ids, villages, answer_hashes)
    with transaction.atomic():
        IngestionChunk.objects.bulk_create(chunks)
        IngestionBatch.objects.filter(pk=batch_id).update(
            row_count=sum(c.row_count for c in chunks), column_count=len(headers), header_mapping=mapping.columns,
            schema_version=schema.version, duplicates=duplicates,
            timings={"plan_s": round(time.perf_counter() - t0, 3)})
        ids = list(IngestionChunk.objects.filter(batch_id=batch_id).order_by("index").values_list("pk", flat=True))
        if enqueue:
            for pk in ids:
                outbox_enqueue("ingestion.process_chunk", pk)
    if not ids:
        batch_finalize(batch_id)
    return ids


# ---- process a chunk ------------------------------------------------------------------------

def chunk_claim(chunk_id: int) -> int | None:
    """Take a chunk that is pending, or whose previous worker's lease ran out.  Returns the attempt."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.RTV_CHUNK_LEASE_SECONDS)
    claimable = Q(status=IngestionChunk.Status.PENDING) | Q(status=IngestionChunk.Status.RUNNING, lease_until__lt=now)
    # Attempts that died with their worker (out of memory, a hard time limit, a kill) never reached
    # _chunk_failed: past the allowed number the chunk is failed here, not handed out for ever.
    spent = IngestionChunk.objects.filter(claimable, pk=chunk_id, attempts__gte=settings.RTV_CHUNK_MAX_ATTEMPTS).update(
        status=IngestionChunk.Status.FAILED, lease_until=None, finished_at=now,
        error=f"the worker stopped during each of its {settings.RTV_CHUNK_MAX_ATTEMPTS} attempts "
              "(killed, out of memory or over its time limit)")
    if spent:
        log.warning("ingestion chunk failed: its workers died", extra={"chunk": chunk_id})
        batch_finalize(IngestionChunk.objects.values_list("batch_id", flat=True).get(pk=chunk_id))
        return None
    claimed = IngestionChunk.objects.filter(claimable, pk=chunk_id).update(
        status=IngestionChunk.Status.RUNNING, lease_until=lease, attempts=F("attempts") + 1)
    if not claimed:
        return None
    return int(IngestionChunk.objects.values_list("attempts", flat=True).get(pk=chunk_id))


def chunk_process(chunk_id: int) -> bool:
    """Validate and store one chunk.  Returns False when another worker has it (or it is done).

    An attempt that raises leaves nothing stored (one transaction) and hands the chunk back as
    pending, to be tried again; the last allowed attempt marks it failed instead (``_chunk_failed``).
    The exception is raised again either way, for the worker's log and error tracking."""
    attempt = chunk_claim(chunk_id)
    if attempt is None:
        return False
    try:
        return _chunk_work(chunk_id, attempt)
    except Exception as exc:
        _chunk_failed(chunk_id, attempt, exc)
        raise


def _chunk_failed(chunk_id: int, attempt: int, exc: Exception) -> None:
    """Record a failed attempt: the chunk is pending again, or, at the last attempt, failed; a
    failed chunk lets its batch finish (failed, naming the chunk's rows and the error)."""
    error = f"{type(exc).__name__}: {exc}"[:2000]
    last = attempt >= settings.RTV_CHUNK_MAX_ATTEMPTS
    mine = IngestionChunk.objects.filter(pk=chunk_id, status=IngestionChunk.Status.RUNNING, attempts=attempt)
    if last:
        updated = mine.update(status=IngestionChunk.Status.FAILED, error=error, lease_until=None,
                              finished_at=timezone.now())
    else:
        updated = mine.update(status=IngestionChunk.Status.PENDING, error=error, lease_until=None)
    log.warning("ingestion chunk failed", extra={"chunk": chunk_id, "attempt": attempt, "final": last,
                                                 "error": error})
    if last and updated:
        batch_finalize(IngestionChunk.objects.values_list("batch_id", flat=True).get(pk=chunk_id))


def _chunk_work(chunk_id: int, attempt: int) -> bool:
    t0 = time.perf_counter()
    chunk = IngestionChunk.objects.select_related("batch").get(pk=chunk_id)
    batch = chunk.batch
    with default_storage.open(chunk.file_key, "rb") as fh:
        raw = pq.read_table(io.BytesIO(fh.read())).to_pandas()
    result = _process_frame(raw, batch=batch, start_row=chunk.start_row, flag_rows=chunk.flag_rows)
    with transaction.atomic():
        record_ids = None
        if not batch.dry_run and result["accepted_mask"].any():
            record_ids = _store_records(batch, result, chunk.start_row)
        _store_issues(batch, result, chunk.start_row, record_ids)
        if settings.RTV_TEST_CHUNK_DELAY:
            time.sleep(settings.RTV_TEST_CHUNK_DELAY)  # lets the kill-a-worker test catch a chunk half-written
        done = IngestionChunk.objects.filter(pk=chunk_id, status=IngestionChunk.Status.RUNNING, attempts=attempt).update(
            status=IngestionChunk.Status.DONE, finished_at=timezone.now(), accepted=result["accepted"],
            rejected=result["rejected"], warnings=result["warnings"], label_counts=result["label_counts"],
            summary=result["summary"],
            seconds=round(time.perf_counter() - t0, 3))
        if not done:
            # Our lease ran out and another worker took the chunk: roll back, it will store it.
            transaction.set_rollback(True)
            return False
    batch_finalize(batch.pk)
    return True


# A file's collection time without an offset: a spreadsheet's date cell, or a partner's export.
_LOCAL_TIME = r"^\s*\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?\s*$"
# Excel's own renderings that name the month (no day/month ambiguity): "5-Mar-2026", "05 Mar 26 10:00".
_MONTH_NAME_TIME = r"^\s*\d{1,2}[- ][A-Za-z]{3,9}[- ]\d{2,4}(?:\s+\d{1,2}:\d{2}(?::\d{2})?)?\s*$"
# A date cell exported as General: Excel's serial day number (1 = 1900-01-01), 1954 to 2119 here.
_EXCEL_SERIAL = r"^\s*[2-7]\d{4}(?:\.\d+)?\s*$"
LOCAL_UTC_OFFSET = "+03:00"  # Africa/Kampala: UTC+3 all year (no daylight saving)


def _local_times(raw: pd.DataFrame) -> pd.DataFrame:
    """Collection times written without an offset are Uganda's local time (a device always sends
    its offset; the rule that asks for one is about devices): '2026-03-05 10:00' is read as
    '2026-03-05T10:00:00+03:00', a date alone as that day's midnight, before validation.  So are the
    forms Excel writes into a CSV that cannot be misread: a month by name ('5-Mar-2026') and a date
    cell's serial number (45721).  Day/month numbers ('05/03/2026') stay as they are: which is the
    day depends on the computer that saved the file, and the row says so rather than guess."""
    if "collected_at" not in raw:
        return raw
    text = raw["collected_at"].astype("string")
    fixed = text.to_numpy(dtype=object)
    changed = False
    for pattern, parse in ((_LOCAL_TIME, lambda t: pd.to_datetime(t.str.strip(), errors="coerce", format="ISO8601")),
                           (_MONTH_NAME_TIME, lambda t: pd.to_datetime(t.str.strip(), errors="coerce", format="mixed",
                                                                       dayfirst=True)),
                           (_EXCEL_SERIAL, lambda t: pd.Timestamp("1899-12-30")
                            + pd.to_timedelta(t.str.strip().astype(float), unit="D").dt.round("s"))):
        local = text.str.match(pattern, na=False).to_numpy(dtype=bool)
        if not local.any():
            continue
        stamps = parse(text[local])
        good = stamps.notna().to_numpy()
        rows = np.flatnonzero(local)[good]
        text_of = stamps[good].dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str.rstrip("0").str.rstrip(".") + LOCAL_UTC_OFFSET
        fixed[rows] = text_of.to_numpy(dtype=object)
        changed = True
    return raw.assign(collected_at=fixed) if changed else raw


def _process_frame(raw: pd.DataFrame, *, batch: IngestionBatch, start_row: int,
                   flag_rows: dict[str, list[int]]) -> dict[str, Any]:
    schema = current_schema()
    rules = active_rules()
    raw = _local_times(raw)
    n = len(raw)
    result = validate_frame(raw, schema.fields, rules=rules, tol_abs=settings.RTV_IDENTITY_TOLERANCE_ABS,
                            tol_rel=settings.RTV_IDENTITY_TOLERANCE_REL,
                            small_groups=lambda: stored_reference(rules))  # as a device's are, for few rows
    typed, issues = result.typed, result.issues
    extra: list[pd.DataFrame] = []  # findings the rules engine does not make, added to its own at once

    def found(idx: np.ndarray, field: str, rule: str, severity: str, message: str,
              values: pd.Series | None = None) -> None:
        shown = (np.full(idx.size, WITHHELD, dtype=object) if field in WITHHELD_FIELDS
                 else (typed[field] if values is None else values).to_numpy()[idx].astype(str))
        extra.append(pd.DataFrame({"row": idx, "field": field, "rule": rule, "severity": severity,
                                   "value": shown, "message": message}))

    flagged = np.zeros(n, dtype=bool)  # a likely duplicate goes to a reviewer, whatever its score
    for kind, rows in flag_rows.items():
        if kind == "ragged_row":  # rejected below, whatever the rules say
            continue
        if kind.startswith(CONFLICTING_COLUMNS + ":"):  # two columns, two values: one was kept
            name = kind.split(":", 1)[1]
            if name in typed:
                idx = np.asarray(rows, dtype=np.int64)
                headers = [str(c["header"]) for c in batch.header_mapping
                           if c["field"] == name or c.get("duplicate_of") == name]
                flagged[idx] = True
                found(idx, name, CONFLICTING_COLUMNS, "warning",
                      f"the file has {len(headers)} columns for {name} ({', '.join(headers)}) and they differ in "
                      f"this row: the value of {headers[0]} was kept; check the others in the original file",
                      values=raw[name])
            continue
        rule = rules.get("household_id", kind)
        if rule is None or "household_id" not in typed:
            continue
        idx = np.asarray(rows, dtype=np.int64)
        flagged[idx] = True
        found(idx, "household_id", kind, rule.severity, rule.message)
    # Across sources: the same answers as a record already stored (another batch: a file's own rows
    # were compared with each other when it was planned).
    answers = answers_hashes(typed)
    rule = rules.get("household_id", "near_duplicate")
    if rule is not None and "household_id" in typed:
        stored = stored_matches(answers, exclude_batch=batch.pk)
        stored[np.asarray(flag_rows.get("near_duplicate", []), dtype=np.int64)] = False  # reported already
        idx = np.flatnonzero(stored)
        if idx.size:
            flagged[idx] = True
            found(idx, "household_id", "near_duplicate", rule.severity, f"{rule.message} (a record already stored)")
    error_rows = np.zeros(n, dtype=bool)
    error_rows[result.error_rows()] = True
    for name, limit in STORED_TEXT_LIMITS.items():  # longer than its column: refused, not a failed insert
        if name not in typed:
            continue
        text = typed[name]
        idx = np.flatnonzero(text.notna().to_numpy() & (text.astype(str).str.strip().str.len() > limit).to_numpy())
        if idx.size:
            error_rows[idx] = True
            found(idx, name, "too_long", "error", f"{name} is longer than {limit} characters")
    for name in raw.columns:  # PostgreSQL stores no NUL character in text: the row is refused, by name
        if name not in typed:
            continue
        idx = np.flatnonzero(raw[name].str.contains("\x00", regex=False).fillna(False).to_numpy(dtype=bool))
        if idx.size:
            error_rows[idx] = True
            found(idx, name, "invalid_characters", "error",
                  f"{name} contains a NUL character (\\u0000), which cannot be stored", values=raw[name])
    overflow = overflowing_income(typed)  # each a number, their sum past a float: no label can say it
    for name in sorted({name for _, name in overflow}):
        idx = np.array([row for row, largest in overflow if largest == name], dtype=np.int64)
        error_rows[idx] = True
        found(idx, name, "out_of_range", "error", "the income components add up to more than a number can hold")
    ragged = np.asarray(flag_rows.get("ragged_row", []), dtype=np.int64)
    if ragged.size:  # cells that do not line up with the header were not read: the row's one finding
        error_rows[ragged] = True
        issues = issues[~issues["row"].isin(ragged)]
        extra = [e[~e["row"].isin(ragged)] for e in extra]
        extra.append(pd.DataFrame({
            "row": ragged, "field": "", "rule": "ragged_row", "severity": "error", "value": "",
            "message": "this row's cells do not line up with the header (a delimiter too many or too few, "
                       "perhaps unquoted in a value): the row was not read"}))
    if extra:
        issues = pd.concat([issues, *extra], ignore_index=True)
    warn_rows = issues.loc[issues["severity"] == "warning", "row"].to_numpy(dtype=np.int64)
    warn_counts = np.bincount(warn_rows, minlength=n) if len(warn_rows) else np.zeros(n, dtype=np.int64)
    accepted = ~error_rows
    per_day = income_per_day(typed)
    status = progress_status(per_day)
    labelled = accepted & (status != "").to_numpy()
    header_by_field = {str(c["field"]): str(c["header"]) for c in batch.header_mapping if c["field"]}
    scores = result.scores
    auto = accepted & ~flagged & (scores["score"].to_numpy() >= settings.RTV_AUTO_APPROVE_SCORE)
    return {
        "raw": raw, "typed": typed, "issues": issues, "answers": answers, "per_day": per_day, "status": status,
        "scores": scores, "auto_approved": auto,
        "vulnerable": is_vulnerable(status), "warn_counts": warn_counts, "accepted_mask": accepted,
        "accepted": int(accepted.sum()), "rejected": int(error_rows.sum()),
        "warnings": int(((warn_counts > 0) & accepted).sum()),
        "label_counts": {str(k): int(v) for k, v in status[labelled].value_counts().items()},
        "header_by_field": header_by_field,
        "summary": _chunk_summary(typed, scores, accepted, error_rows, warn_counts > 0),
    }


SCORE_NAMES = ("score", "completeness", "validity", "consistency")


def _chunk_summary(typed: pd.DataFrame, scores: pd.DataFrame, accepted: np.ndarray, rejected: np.ndarray,
                   warned: np.ndarray) -> dict[str, Any]:
    """What the batch quality report adds up over chunks: score sums of the rows accepted, and by
    district the rows, accepted, rejected and warned.  From the validated rows, so a dry run (which
    stores no record) and rejected rows (no record either) are in the report too."""
    n = len(accepted)
    district = (_storable(typed["district"].astype(object).where(typed["district"].notna(), "").astype(str).str.strip())
                if "district" in typed else pd.Series([""] * n))  # a rejected row's district too: no NUL in the JSON
    frame = pd.DataFrame({"district": district.to_numpy(), "accepted": accepted, "rejected": rejected,
                          "with_warnings": warned & accepted,
                          "score_sum": np.where(accepted, scores["score"].to_numpy(dtype=float), 0.0)})
    grouped = frame.groupby("district", sort=True).agg(
        rows=("accepted", "size"), accepted=("accepted", "sum"), rejected=("rejected", "sum"),
        with_warnings=("with_warnings", "sum"), score_sum=("score_sum", "sum"))
    return {"accepted": int(accepted.sum()),
            "score_sums": {k: float(scores[k].to_numpy(dtype=float)[accepted].sum()) for k in SCORE_NAMES},
            "by_district": {str(d): {k: (float(v) if k == "score_sum" else int(v)) for k, v in row.items()}
                            for d, row in grouped.iterrows()}}


def _row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """A content hash per row, vectorised (pandas' hash of the typed values)."""
    return np.char.mod("%016x", pd.util.hash_pandas_object(frame, index=False).to_numpy())


def _nullable_hashes(hashes: np.ndarray) -> pd.arrays.IntegerArray:
    """Answers hashes as the column stores them: NULL for a row with no answers (hash 0)."""
    out = pd.array(hashes, dtype="Int64")
    out[hashes == 0] = pd.NA
    return out


def _upsert_households(typed: pd.DataFrame) -> pd.Series:
    """Household pk per row (every row carries a household_id: it is required)."""
    hh = typed[["household_id", "district", "village"]].drop_duplicates("household_id")
    ids = hh["household_id"].tolist()
    if connection.vendor == "postgresql":
        # The ids travel as one JSON document: psycopg quotes a text[] element by element in
        # Python (0.3 s for a 20k-row chunk); json.dumps is C, and the server unpacks it.
        rows = json.dumps(hh.astype(object).where(hh.notna(), None).to_numpy().tolist())
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {Household._meta.db_table} (household_id, district, village, created_at) "
                "SELECT r->>0, coalesce(r->>1, ''), coalesce(r->>2, ''), now() FROM jsonb_array_elements(%s::jsonb) r "
                # In key order: two chunks that share new households (in opposite orders in their
                # rows) then wait on each other's keys in one order, never in a cycle (a deadlock).
                "ORDER BY r->>0 ON CONFLICT (household_id) DO NOTHING",
                [rows],
            )
            cursor.execute(f"SELECT household_id, id FROM {Household._meta.db_table} WHERE household_id = "
                           "ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)))", [json.dumps(ids)])
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


def _store_records(batch: IngestionBatch, r: dict[str, Any], start_row: int) -> pd.Series:
    keep = r["accepted_mask"]
    t = r["typed"][keep]
    rows = pd.DataFrame({
        "household_id": _upsert_households(t),
        "batch_id": str(batch.id),
        "row_number": np.flatnonzero(keep) + start_row + 2,
        "survey_round": "",
        "version": 1,
        "content_hash": _row_hashes(t),
        "answers_hash": _nullable_hashes(r["answers"][keep]),
        "district": t["district"],
        "cluster": t.get("cluster", ""),
        "village": t["village"],
        "household_size": t["household_size"].astype("Int64"),
        "income_per_day": r["per_day"][keep],
        "progress_status": r["status"][keep],
        "vulnerable": r["vulnerable"][keep],
        "review_status": np.where(r["auto_approved"][keep], SurveyRecord.ReviewStatus.APPROVED,
                                  SurveyRecord.ReviewStatus.HAS_ISSUES),
        "warning_count": r["warn_counts"][keep],
        "form_version": "",
        "device_id": "",
        # One timestamp for the chunk, as text: a datetime column is formatted row by row on its way to COPY.
        "received_at": timezone.now().isoformat(),
        "auto_approved": r["auto_approved"][keep],
        "quality_score": r["scores"]["score"].to_numpy()[keep],
        "completeness": r["scores"]["completeness"].to_numpy()[keep],
        "validity": r["scores"]["validity"].to_numpy()[keep],
        "consistency": r["scores"]["consistency"].to_numpy()[keep],
        "collected_at": (pd.to_datetime(t["collected_at"], utc=True, errors="coerce", format="ISO8601")
                         if "collected_at" in t else pd.Series(pd.NaT, index=t.index, dtype="datetime64[ns, UTC]")),
        "gps": _gps_cells(t),
    }, index=t.index)
    copy_frame(SurveyRecord, rows, RECORD_COLUMNS, not_null_text=RECORD_TEXT_COLUMNS)
    first, last = start_row + 2, start_row + 1 + len(r["typed"])
    ids = pd.Series(dict(SurveyRecord.objects.filter(batch=batch, row_number__range=(first, last))
                         .values_list("row_number", "id")), dtype="Int64")
    values = t[[c for c in SURVEY_VALUE_FIELDS if c in t.columns]].copy()
    values.insert(0, "record_id", rows["row_number"].map(ids).to_numpy())
    copy_frame(SurveyValues, values, list(values.columns))
    return ids


def _gps_cells(t: pd.DataFrame) -> np.ndarray:
    """A file's GPS point per row as the record stores it, encrypted ({lat, lon[, accuracy_m]}, as a
    device sends it); None where the file has no point.  One encryption per point (~15 µs)."""
    out = np.full(len(t), None, dtype=object)
    if "gps_lat" not in t or "gps_lon" not in t:
        return out
    lat = pd.to_numeric(t["gps_lat"], errors="coerce").to_numpy(dtype=float)
    lon = pd.to_numeric(t["gps_lon"], errors="coerce").to_numpy(dtype=float)
    acc = (pd.to_numeric(t["gps_accuracy_m"], errors="coerce").to_numpy(dtype=float) if "gps_accuracy_m" in t
           else np.full(len(t), np.nan))
    for i in np.flatnonzero(~np.isnan(lat) & ~np.isnan(lon)).tolist():
        point = {"lat": lat[i], "lon": lon[i]} | ({} if np.isnan(acc[i]) else {"accuracy_m": acc[i]})
        out[i] = encrypt_value(point)
    return out


def _storable(text: pd.Series) -> pd.Series:
    """Text as a finding can keep it: a NUL character (which PostgreSQL refuses) shown as U+2400."""
    return text.str.replace("\x00", "\u2400", regex=False)


def _store_issues(batch: IngestionBatch, r: dict[str, Any], start_row: int, record_ids: pd.Series | None) -> None:
    issues = r["issues"]
    if issues.empty:
        return
    rows = issues.sort_values(["row", "severity", "field"], kind="stable").reset_index(drop=True)
    local = rows["row"].to_numpy(dtype=np.int64)
    row_number = local + start_row + 2
    typed = r["typed"]
    hid = typed["household_id"].to_numpy(dtype=object)[local] if "household_id" in typed else np.full(len(rows), None)
    frame = pd.DataFrame({
        "batch_id": str(batch.id),
        "record_id": pd.Series(row_number).map(record_ids) if record_ids is not None else None,
        "row_number": row_number,
        # Cut to the column's length: the finding's value keeps it whole.
        "household_id": _storable(pd.Series(hid, dtype=object).str.slice(0, STORED_TEXT_LIMITS["household_id"])),
        "field": rows["field"],
        # A header longer than the column maps all the same (aliases ignore punctuation): cut to fit.
        "column": rows["field"].map(r["header_by_field"]).fillna("").str.slice(0, ISSUE_COLUMN_LENGTH),
        "rule": rows["rule"],
        "severity": rows["severity"],
        "value": _storable(rows["value"]),
        "message": rows["message"],
    })
    copy_frame(RowIssue, frame, ISSUE_COLUMNS, not_null_text=["household_id", "field", "column", "value", "message"])


# ---- finalise, resume ----------------------------------------------------------------------

def batch_finalize(batch_id: Any) -> bool:
    """Close the batch once every chunk is done or failed (exactly one caller closes it: the others
    wait on the batch's row, then find it closed).  Any failed chunk makes the batch failed: what
    the other chunks stored stays, counted, and the error names the failed chunks' spreadsheet rows.
    Before the counts are taken, rows that duplicate what another upload stored while this one ran
    are flagged (``_flag_late_duplicates``)."""
    finished = [IngestionChunk.Status.DONE, IngestionChunk.Status.FAILED]
    if IngestionChunk.objects.filter(batch_id=batch_id).exclude(status__in=finished).exists():
        return False
    with transaction.atomic():
        # FOR NO KEY UPDATE: a row inserted meanwhile that points to the batch (a record, a finding)
        # is not held up by it.
        batch = (IngestionBatch.objects.select_for_update(no_key=True)
                 .filter(pk=batch_id, status=IngestionBatch.Status.RUNNING).first())
        if batch is None:
            return False
        late = {} if batch.dry_run else _flag_late_duplicates(batch)
        failed = list(IngestionChunk.objects.filter(batch_id=batch_id, status=IngestionChunk.Status.FAILED)
                      .order_by("index").values_list("start_row", "row_count", "attempts", "error"))
        error = "; ".join(f"chunk_failed: rows {start + 2}-{start + count + 1} were not stored after {attempts} "
                          f"attempts ({why})" for start, count, attempts, why in failed)
        totals = IngestionChunk.objects.filter(batch_id=batch_id).aggregate(
            accepted=Sum("accepted"), rejected=Sum("rejected"), warnings=Sum("warnings"), seconds=Sum("seconds"))
        label_counts: dict[str, int] = {}
        for counts in IngestionChunk.objects.filter(batch_id=batch_id).values_list("label_counts", flat=True):
            for k, v in counts.items():
                label_counts[k] = label_counts.get(k, 0) + int(v)
        quality = batch_quality_report(batch)
        for district, n in late.items():  # rows whose first warning this is: the chunks could not count them
            if district in quality["by_district"]:
                quality["by_district"][district]["with_warnings"] += n
        now = timezone.now()
        timings = {**batch.timings, "chunks_s": round(totals["seconds"] or 0.0, 3),
                   "total_s": round((now - batch.created_at).total_seconds(), 3)}
        won = IngestionBatch.objects.filter(pk=batch_id, status=IngestionBatch.Status.RUNNING).update(
            status=IngestionBatch.Status.FAILED if failed else IngestionBatch.Status.SUCCEEDED, error=error,
            finished_at=now, accepted=totals["accepted"] or 0,
            rejected=totals["rejected"] or 0, warnings=(totals["warnings"] or 0) + sum(late.values()),
            label_counts=label_counts, timings=timings, quality=quality)
        if won:
            batch.refresh_from_db()
            audit_record(actor=batch.created_by, action="ingestion.failed" if failed else "ingestion.completed",
                         obj=batch, changes={"accepted": batch.accepted, "rejected": batch.rejected,
                                             "dry_run": batch.dry_run, "failed_chunks": len(failed)})
    if won:
        # A failed chunk's file stays under temp/ for whoever looks into it (the original is under raw/).
        for key in IngestionChunk.objects.filter(batch_id=batch_id, status=IngestionChunk.Status.DONE).values_list(
                "file_key", flat=True):
            default_storage.delete(key)
        log.info("ingestion finished", extra={"ingestion_id": str(batch_id), "rows": batch.row_count,
                                              "accepted": batch.accepted, "rejected": batch.rejected, "timings": timings})
    return bool(won)


def _flag_late_duplicates(batch: IngestionBatch) -> dict[str, int]:
    """Flag this batch's records whose answers equal those of a record another upload (or a device)
    stored while this batch ran, when neither is flagged yet.

    Each chunk compares its rows with the records stored when it runs.  Two uploads processed at
    the same time (a corrected export sent while the first is still running) each miss the other's
    rows that were not committed yet, and every shared row would go in twice unflagged.  Whichever
    batch closes second sees the other's rows here, all committed: the pair is flagged at least once.
    A row already flagged, on either side, is left as it is.  Returns, by district, the rows whose
    first warning this is (the chunks' counts could not include them)."""
    rule = active_rules().get("household_id", "near_duplicate")
    if rule is None:
        return {}
    # What another door stored that this batch's chunks may not have seen: the chunks of other files
    # that finished (committed) after this batch was created, and devices' batches since then.  A
    # chunk stamps ``finished_at`` just before its commit, and the hosts' clocks differ a little:
    # the window opens a margin earlier.  Usually there is nothing, and no record is read.
    since = batch.created_at - LATE_DUPLICATE_MARGIN
    chunks = list(IngestionChunk.objects.filter(status=IngestionChunk.Status.DONE, finished_at__gte=since,
                                                batch__dry_run=False).exclude(batch_id=batch.pk)
                  .values_list("batch_id", "start_row", "row_count"))
    devices = list(IngestionBatch.objects.filter(channel=IngestionBatch.Channel.DEVICE, created_at__gte=since)
                   .values_list("pk", flat=True))
    if not chunks and not devices:
        return {}
    theirs = Q(batch_id__in=devices)
    for batch_id, start_row, row_count in chunks:  # a chunk's records, by the (batch, row) index
        theirs |= Q(batch_id=batch_id, row_number__gte=start_row + 2, row_number__lte=start_row + row_count + 1)
    # Plain look-ups by index, matched here: a join of the two sides let PostgreSQL, its statistics
    # not yet updated after a million-row COPY, choose a plan that ran for minutes.
    flagged = RowIssue.objects.filter(record=OuterRef("pk"), rule="near_duplicate")
    unflagged = SurveyRecord.objects.filter(answers_hash__isnull=False, superseded_by__isnull=True).exclude(
        Exists(flagged))
    seen = set(unflagged.filter(theirs).values_list("answers_hash", flat=True))
    if not seen:
        return {}
    rows = [row[:1] + row[2:] for row in unflagged.filter(batch=batch).order_by("row_number").values_list(
        "pk", "answers_hash", "row_number", "household__household_id", "district", "warning_count")
        if row[1] in seen]
    if not rows:
        return {}
    ids = [row[0] for row in rows]
    header = next((str(c["header"]) for c in batch.header_mapping if c["field"] == "household_id"), "")
    household_ids = pd.Series([row[2] for row in rows], dtype=object)
    copy_frame(RowIssue, pd.DataFrame({
        "batch_id": str(batch.pk), "record_id": ids, "row_number": [row[1] for row in rows],
        "household_id": household_ids, "field": "household_id", "column": header[:ISSUE_COLUMN_LENGTH],
        "rule": "near_duplicate", "severity": rule.severity, "value": household_ids,
        "message": f"{rule.message} (a record another upload stored while this one ran)"}),
        ISSUE_COLUMNS, not_null_text=["household_id", "field", "column", "value", "message"])
    step = len(ids) if connection.vendor == "postgresql" else 500  # SQLite: a bounded number of parameters
    for start in range(0, len(ids), step):
        records = _records_by_ids(ids[start:start + step])
        # Locked in key order first, as a reviewer's decision locks them: the two never deadlock.
        list(records.select_for_update(no_key=True).order_by("pk").values_list("pk", flat=True))
        # A likely duplicate goes to a reviewer, whatever its score (as a chunk decides for its own);
        # the rule is a warning (the database allows no other severity for it).
        records.filter(auto_approved=True, review_status=SurveyRecord.ReviewStatus.APPROVED).update(
            auto_approved=False, review_status=SurveyRecord.ReviewStatus.HAS_ISSUES)
        records.update(warning_count=F("warning_count") + 1)
    first: dict[str, int] = {}
    for _, _, _, district, warnings in rows:
        if not warnings:
            key = str(district or "").strip()
            first[key] = first.get(key, 0) + 1
    log.info("late duplicates flagged", extra={"ingestion_id": str(batch.pk), "rows": len(ids)})
    return first


def _records_by_ids(ids: list[int]) -> Any:
    """Records by id; on PostgreSQL as one array parameter (a placeholder each costs ~20 us to compose)."""
    if connection.vendor == "postgresql":
        return SurveyRecord.objects.filter(pk__in=RawSQL("SELECT unnest(%s::bigint[])", [int_array(ids)]))
    return SurveyRecord.objects.filter(pk__in=ids)


def batch_quality_report(batch: IngestionBatch) -> dict[str, Any]:
    """Counts by rule, column and district, and the mean scores: a handful of grouped queries."""
    by_rule: dict[str, dict[str, int]] = {}
    for row in RowIssue.objects.filter(batch=batch).values("rule", "severity").annotate(n=Count("id")):
        by_rule.setdefault(row["rule"], {"error": 0, "warning": 0})[row["severity"]] = row["n"]
    by_column: dict[str, dict[str, int]] = {}
    for row in RowIssue.objects.filter(batch=batch).values("field", "column", "severity").annotate(n=Count("id")):
        entry = by_column.setdefault(row["field"], {"column": row["column"], "error": 0, "warning": 0})
        entry[row["severity"]] = row["n"]
    # Scores and districts from the chunks' summaries: the rows as validated, so a dry run and the
    # rejected rows count too.  "records" are the rows accepted (stored, unless a dry run).
    accepted = 0
    sums = dict.fromkeys(SCORE_NAMES, 0.0)
    districts: dict[str, dict[str, float]] = {}
    for summary in IngestionChunk.objects.filter(batch=batch).values_list("summary", flat=True):
        accepted += int(summary.get("accepted", 0))
        for k in SCORE_NAMES:
            sums[k] += float(summary.get("score_sums", {}).get(k, 0.0))
        for d, row in summary.get("by_district", {}).items():
            total = districts.setdefault(d, dict.fromkeys(("rows", "accepted", "rejected", "with_warnings", "score_sum"),
                                                          0.0))
            for k in total:
                total[k] += row.get(k, 0)
    scores = {k: (sums[k] / accepted if accepted else None) for k in SCORE_NAMES}
    by_district = {d: {"records": int(t["accepted"]), "rows": int(t["rows"]), "rejected": int(t["rejected"]),
                       "with_warnings": int(t["with_warnings"]),
                       "mean_score": t["score_sum"] / t["accepted"] if t["accepted"] else None}
                   for d, t in sorted(districts.items())}
    return {"scores": scores, "by_rule": by_rule, "by_column": by_column, "by_district": by_district,
            "frequency_shift": frequency_shift(batch)}


def _psi(current: dict[Any, int], reference: dict[Any, int]) -> float:
    """Population stability index between two category counts (empty categories floored)."""
    keys = set(current) | set(reference)
    c_total, r_total = sum(current.values()) or 1, sum(reference.values()) or 1
    psi = 0.0
    for k in keys:
        p = max(current.get(k, 0) / c_total, 1e-4)
        q = max(reference.get(k, 0) / r_total, 1e-4)
        psi += (p - q) * float(np.log(p / q))
    return psi


def _answer_counts(values: Any, fields: list[str]) -> dict[str, dict[Any, int]]:
    """Each field's answer counts from one grouped query over all the fields together (one scan of
    the rows, not one per field: on a million-row batch that was 2.6 s a field), summed per field."""
    counts: dict[str, dict[Any, int]] = {name: {} for name in fields}
    if not fields:
        return counts
    for row in values.values(*fields).annotate(_n=Count("record")).values_list(*fields, "_n"):
        n = row[-1]
        for name, answer in zip(fields, row[:-1], strict=False):
            counts[name][answer] = counts[name].get(answer, 0) + n
    return counts


def frequency_shift(batch: IngestionBatch) -> dict[str, Any]:
    """Answer frequencies of this batch against the stored history (one grouped query a side).  A
    PSI above the rule's alert level is reported as a shift."""
    rule = active_rules().get("district", "frequency_shift")
    if rule is None or batch.dry_run:
        return {}
    # A bounded window of the most recent history: finalising a batch must not scan every record
    # ever stored (it did, and took 20 s once a million rows were in).
    # The newest records by key (a backward walk of the primary key), then the superseded ones among
    # them dropped: filtering superseded records first made PostgreSQL anti-join the whole table.
    recent = SurveyRecord.objects.exclude(batch=batch).order_by("-id").values("id")[: rule.params.get("history_rows", 20_000)]
    history = SurveyValues.objects.filter(record_id__in=Subquery(recent)).exclude(
        Exists(SurveyRecord.objects.filter(supersedes_id=OuterRef("record_id"))))
    if history.count() < rule.params.get("min_history", 200):
        return {"skipped": "not enough history"}
    mine = SurveyValues.objects.filter(record__batch=batch)
    fields = list(rule.params.get("fields", []))
    current, reference = _answer_counts(mine, fields), _answer_counts(history, fields)
    psi = {name: round(_psi(current[name], reference[name]), 4) for name in fields}
    alert = rule.params.get("psi_alert", 0.25)
    return {"psi": psi, "shifted": sorted(k for k, v in psi.items() if v > alert), "psi_alert": alert,
            "message": rule.message}


def _clear_temp(batch_id: Any) -> None:
    """Delete the batch's chunk files (none are recorded before planning ends)."""
    prefix = area_path("temp", str(batch_id))
    try:
        _, names = default_storage.listdir(prefix)
    except (FileNotFoundError, NotImplementedError):
        return
    for name in names:
        default_storage.delete(f"{prefix}/{name}")


def plans_resume_stale(*, pending_older_than: timedelta = timedelta(minutes=10)) -> int:
    """Plan again the batches whose planner died (killed, lost host): still running past their plan
    lease with no chunk written (chunks are written together, when planning ends); and the pending
    batches whose message was lost (a broker restarted without its queue).  A batch whose planners
    died ``RTV_PLAN_MAX_ATTEMPTS`` times fails, saying so, rather than kill a worker every sweep.

    A pending batch is sent again at most once per ``pending_older_than`` (its plan lease marks when,
    as a chunk's does): behind a backlog of messages, every sweep would otherwise add one more."""
    now = timezone.now()
    no_chunks = ~Exists(IngestionChunk.objects.filter(batch=OuterRef("pk")))
    died = Q(status=IngestionBatch.Status.RUNNING, plan_lease_until__lt=now)
    lost = (Q(status=IngestionBatch.Status.PENDING, created_at__lt=now - pending_older_than)
            & (Q(plan_lease_until__isnull=True) | Q(plan_lease_until__lt=now)))
    with transaction.atomic():
        rows = list(IngestionBatch.objects.filter(died | lost).filter(no_chunks).select_for_update(skip_locked=True)
                    .values_list("pk", "status", "plan_attempts")[:100])
        spent = [pk for pk, status, attempts in rows
                 if status == IngestionBatch.Status.RUNNING and attempts >= settings.RTV_PLAN_MAX_ATTEMPTS]
        again = [pk for pk, _, _ in rows if pk not in set(spent)]
        IngestionBatch.objects.filter(pk__in=spent).update(
            status=IngestionBatch.Status.FAILED, finished_at=now, plan_lease_until=None,
            error=f"plan_failed: its worker stopped {settings.RTV_PLAN_MAX_ATTEMPTS} times while splitting the file into "
                  "chunks (killed, or out of memory): it may be too big to read whole; send it as CSV, or in parts")
        IngestionBatch.objects.filter(pk__in=again).update(status=IngestionBatch.Status.PENDING,
                                                           plan_lease_until=now + pending_older_than)
        for message in OutboxMessage.objects.bulk_create(  # keys returned: no read back
                [OutboxMessage(task="ingestion.plan_batch", args=[str(pk)]) for pk in again]):
            outbox_after_commit(message)
    for pk in spent:
        _clear_temp(pk)
        log.warning("planning failed for good", extra={"ingestion_id": str(pk)})
    return len(again)


def batches_close_stale(*, older_than: timedelta = timedelta(minutes=10)) -> int:
    """Close the batches left running with every chunk finished: the close of the last chunk's
    worker failed (killed, a database error) and no chunk remains to try it again."""
    finished = [IngestionChunk.Status.DONE, IngestionChunk.Status.FAILED]
    stale = list(IngestionBatch.objects.filter(status=IngestionBatch.Status.RUNNING,
                                               created_at__lt=timezone.now() - older_than)
                 .filter(Exists(IngestionChunk.objects.filter(batch=OuterRef("pk"))))
                 .exclude(Exists(IngestionChunk.objects.filter(batch=OuterRef("pk")).exclude(status__in=finished)))
                 .values_list("pk", flat=True)[:10])  # a close can take seconds: a few a sweep
    closed = 0
    for pk in stale:
        try:
            closed += batch_finalize(pk)
        except Exception:  # one batch's failure does not keep the others open; the next sweep tries again
            log.exception("closing a stale batch failed", extra={"ingestion_id": str(pk)})
    return closed


def chunks_resume_stale(*, pending_older_than: timedelta = timedelta(minutes=10)) -> int:
    """Hand out again chunks whose worker died (lease expired) or whose message was lost.

    A chunk handed out again is pending, and not handed out again for ``pending_older_than``: with
    a backlog of messages ahead of it (busy workers), every sweep would otherwise add another
    message for each waiting chunk."""
    now = timezone.now()
    due = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    with transaction.atomic():
        stale = list(IngestionChunk.objects.select_for_update(skip_locked=True, of=("self",)).filter(
            Q(status=IngestionChunk.Status.RUNNING, lease_until__lt=now)
            | (Q(status=IngestionChunk.Status.PENDING, batch__created_at__lt=now - pending_older_than) & due)
        ).values_list("pk", flat=True)[:500])
        IngestionChunk.objects.filter(pk__in=stale).update(status=IngestionChunk.Status.PENDING,
                                                           lease_until=now + pending_older_than)
        for pk in stale:
            outbox_enqueue("ingestion.process_chunk", pk)
    return len(stale)


# ---- the synchronous door (commands, tests, benchmarks) -----------------------------------

def ingest_file(path: str | Path, *, user: AbstractBaseUser | AnonymousUser | None = None,
                channel: str = IngestionBatch.Channel.COMMAND, source: str = "", dry_run: bool = False,
                force: bool = False, original_name: str | None = None) -> IngestionBatch:
    """Ingest a local file in this process, through the same create/plan/chunk path as uploads."""
    path = Path(path)
    with path.open("rb") as fh:
        batch = batch_create(fh=fh, original_name=original_name or path.name, user=user, channel=channel,
                             source=source, dry_run=dry_run, force=force)
    for chunk_id in batch_plan(batch.pk, enqueue=False):
        for _ in range(settings.RTV_CHUNK_MAX_ATTEMPTS):  # a failed attempt hands the chunk back as pending
            try:
                chunk_process(chunk_id)
                break
            except Exception:
                log.exception("ingestion chunk attempt failed", extra={"chunk": chunk_id})
    batch.refresh_from_db()
    return batch


def batch_progress(batch: IngestionBatch) -> dict[str, Any]:
    """Rows done and counts so far, from the finished chunks; once the batch has succeeded, its own
    counts, which the close completed (rows another upload stored meanwhile are warnings from then
    on), so the batch's page and the list of batches give the same figures."""
    done = IngestionChunk.objects.filter(batch=batch, status=IngestionChunk.Status.DONE).aggregate(
        rows=Sum("row_count"), accepted=Sum("accepted"), rejected=Sum("rejected"), warnings=Sum("warnings"))
    if batch.status == IngestionBatch.Status.SUCCEEDED:
        return {"rows_done": done["rows"] or 0, "rows_total": batch.row_count,
                "accepted": batch.accepted, "rejected": batch.rejected, "warnings": batch.warnings}
    return {"rows_done": done["rows"] or 0, "rows_total": batch.row_count,
            "accepted": done["accepted"] or 0, "rejected": done["rejected"] or 0, "warnings": done["warnings"] or 0}


__all__ = ["DuplicateFile", "FileNotStored", "IngestSummary", "TooManyRows", "batch_create", "batch_finalize", "batch_plan",
           "batch_progress", "chunk_process", "chunks_resume_stale", "ingest_file", "plans_resume_stale"]
