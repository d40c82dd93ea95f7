"""Likely duplicates across the store: a household whose answers are identical to a stored current
record's, whatever door either came through (device, upload, partner file).

A file is checked against itself when it is planned (``near_duplicate`` on the raw text of a whole
file); this module checks each new record against what is already stored.  Both doors hash the same
typed values the same way, so a partner file that repeats what a device sent is found, and so is a
cumulative export sent again with new rows at the end (a different file, so not refused by its
sha256).  The hash covers every survey answer, village included, but not the household id: the same
answers under another id is the likelier duplicate, as the rule says.  A re-survey of a household
in a later round has other answers; a reviewer's correction supersedes its record, so only current
versions are compared.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
from django.db import connection, transaction

from rtv import contract
from rtv.bulk import int_array

from .rules import NEAR_DUPLICATE_IGNORE

NUMERIC_TYPES = ("decimal", "integer", "code")
ANSWER_FIELDS: tuple[tuple[str, bool], ...] = tuple(
    (s.name, s.type in NUMERIC_TYPES) for s in contract.SURVEY_FIELDS if s.name not in NEAR_DUPLICATE_IGNORE)
MULTISELECT = frozenset(s.name for s in contract.SURVEY_FIELDS if s.type == "multiselect")
JIT_FREE_PROBES = 16  # look-ups of at most this many hashes are planned far below PostgreSQL's JIT threshold
_SEPARATORS = re.compile(r"[\s,;]+")


def answers_hashes(typed: pd.DataFrame) -> np.ndarray:
    """One signed 64-bit hash per row of typed survey values (as ``validate_frame`` types them): numbers
    as float64 (3 and 3.0 are one answer), text stripped.  Each present answer adds its own hash (of
    the field and the value) and a missing one adds nothing, so a field added to the contract later,
    missing from older records and files, leaves their hashes as they were.  0: no answer at all."""
    numeric = tuple(name for name, is_number in ANSWER_FIELDS if is_number and name in typed)
    text = tuple(name for name, is_number in ANSWER_FIELDS if not is_number and name in typed)
    numbers = np.empty((len(typed), 0))
    if numeric:
        block = typed[list(numeric)]
        try:  # float64 and Int64 columns, as validate_frame types them, in one step
            numbers = block.to_numpy(dtype="float64", na_value=np.nan)
        except (TypeError, ValueError):  # text among them (stored values read back, a hand-made frame)
            numbers = block.apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    words = np.empty((len(typed), 0), dtype=object)
    if text:
        cells = typed[list(text)].to_numpy(dtype=object)
        words = np.full(cells.shape, "", dtype=object)
        given = ~pd.isna(cells)
        words[given] = [str(v).strip() for v in cells[given]]
        for j, name in enumerate(text):
            if name in MULTISELECT:  # few distinct answers: each normalised once
                column = words[:, j]
                normal = {v: _codes(v) for v in set(column.tolist())}
                words[:, j] = [normal[v] for v in column]
    return _hashes(numbers, numeric, words, text)


def record_answers_hashes(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """``answers_hashes`` of a few rows given as plain values (a device request's items), without
    pandas' per-column cost (1.9 ms a row against 0.1 ms)."""
    numeric = tuple(name for name, is_number in ANSWER_FIELDS if is_number)
    text = tuple(name for name, is_number in ANSWER_FIELDS if not is_number)
    numbers = np.array([[_number(row.get(name)) for name in numeric] for row in rows], dtype="float64")
    words = np.array([[_codes(_word(row.get(name))) if name in MULTISELECT else _word(row.get(name)) for name in text]
                      for row in rows], dtype=object)
    return _hashes(numbers.reshape(len(rows), len(numeric)), numeric, words.reshape(len(rows), len(text)), text)


def _number(value: Any) -> float:
    try:
        return float(value) if value is not None and value is not pd.NA else np.nan
    except (TypeError, ValueError):
        return np.nan


def _word(value: Any) -> str:
    return "" if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)) else str(value).strip()


def _codes(text: str) -> str:
    """A multi-select answer as a set: "3 1", "1,3" and "1.0 3" are one answer ("1 3")."""
    return " ".join(sorted({_code(t) for t in _SEPARATORS.split(text) if t}))


def _code(token: str) -> str:
    try:
        number = float(token)
    except ValueError:
        return token
    return str(int(number)) if number.is_integer() else token


def _hashes(numbers: np.ndarray, numeric: tuple[str, ...], words: np.ndarray, text: tuple[str, ...]) -> np.ndarray:
    """Rows' hashes from an (n, k) float64 block and an (n, m) block of stripped text ('' missing):
    all the numbers hashed in one call and all the text in another."""
    n = len(numbers)
    total = np.zeros(n, dtype=np.uint64)
    if n and numeric:
        flat = numbers.ravel() + 0.0  # -0.0 and 0.0 are one answer
        _add(total, flat, ~np.isnan(flat), _salts(numeric), n)
    if n and text:
        flat = words.ravel()
        _add(total, flat, flat != "", _salts(text), n)
    return total.view(np.int64)


def _add(total: np.ndarray, values: np.ndarray, present: np.ndarray, salts: np.ndarray, n: int) -> None:
    """Add each present cell's hash, salted by its field, to its row's total (cells row-major)."""
    if not present.any():
        return
    h = np.zeros(len(values), dtype=np.uint64)
    cells = values[present]
    # Factorising first pays on a chunk's repeated text, not on a device item's few cells (220 µs
    # against 17; the hashes are the same either way).
    h[present] = pd.util.hash_array(cells, categorize=cells.dtype == object and len(cells) > 1000)
    with np.errstate(over="ignore"):
        mixed = (h ^ np.tile(salts, n)) * np.uint64(0x9E3779B97F4A7C15)
        mixed[~present] = 0
        total += mixed.reshape(n, len(salts)).sum(axis=1, dtype=np.uint64)


@cache
def _salts(names: tuple[str, ...]) -> np.ndarray:
    return pd.util.hash_array(np.array(names, dtype=object))


def stored_matches(hashes: np.ndarray, *, exclude_batch: object = None,
                   exclude_records: Iterable[int] = ()) -> np.ndarray:
    """For each hash, whether a stored current record (not of ``exclude_batch``, not one of
    ``exclude_records``) has the same answers.  One query whatever the number of rows, and each hash
    stops at its first match: a household sent a thousand times costs no more than one sent twice."""
    from ingestion.models import SurveyRecord

    wanted = [int(h) for h in np.unique(hashes) if h != 0]
    if not wanted:
        return np.zeros(len(hashes), dtype=bool)
    excluded = [int(pk) for pk in exclude_records]
    if connection.vendor == "postgresql":
        quote = connection.ops.quote_name
        table = quote(SurveyRecord._meta.db_table)
        conditions: list[str] = []
        params: list[object] = [int_array(wanted)]
        if exclude_batch is not None:
            conditions.append("AND r.batch_id <> %s")
            params.append(str(exclude_batch))
        if excluded:
            conditions.append("AND r.id <> ALL(%s::bigint[])")
            params.append(int_array(excluded))
        # A probe of the index per hash, stopping at the first current match (LIMIT 1 in a LATERAL
        # join: with EXISTS the planner chose scans of the whole table once a hash was common).
        sql = (f"SELECT w.h FROM unnest(%s::bigint[]) AS w(h) CROSS JOIN LATERAL (SELECT 1 FROM {table} r "
               f"WHERE r.answers_hash = w.h {' '.join(conditions)} "
               f"AND NOT EXISTS (SELECT 1 FROM {table} s WHERE s.supersedes_id = r.id) LIMIT 1) AS m")
        # Without JIT: PostgreSQL compiles a plan whose cost estimate passes 100,000, which a common
        # hash makes of a device batch's 100 probes (0.6 ms to run, 10-190 ms to compile).  A few
        # probes never reach it, and a device's one submission is spared the round trip.  SET LOCAL
        # ends with the transaction (the request's own, when there is one).
        jit_off = len(wanted) > JIT_FREE_PROBES
        scope = transaction.atomic() if jit_off and not connection.in_atomic_block else nullcontext()
        with scope, connection.cursor() as cursor:
            if jit_off:
                cursor.execute("SET LOCAL jit = off")
            cursor.execute(sql, params)
            found = {row[0] for row in cursor.fetchall()}
    else:  # SQLite, the embedded run
        qs = SurveyRecord.objects.filter(superseded_by__isnull=True)
        if exclude_batch is not None:
            qs = qs.exclude(batch_id=exclude_batch)
        if excluded:
            qs = qs.exclude(pk__in=excluded)
        found = set()
        for start in range(0, len(wanted), 500):
            found.update(qs.filter(answers_hash__in=wanted[start:start + 500])
                         .values_list("answers_hash", flat=True).distinct())
    return np.isin(hashes, np.fromiter(found, dtype=np.int64, count=len(found))) & (hashes != 0)


def within(hashes: np.ndarray) -> np.ndarray:
    """Rows whose answers another row of the same input repeats."""
    if len(hashes) < 2:
        return np.zeros(len(hashes), dtype=bool)
    return pd.Series(hashes).duplicated(keep=False).to_numpy() & (hashes != 0)


def stored_value(h: int | np.integer) -> int | None:
    """The column's value: NULL for a row with no answers at all (hash 0), which matches nothing."""
    return int(h) or None


def backfill(records: object, values: object, chunk: int = 20_000) -> int:
    """Set ``answers_hash`` on stored records that have none, from their typed values, a chunk at a
    time (the migration that adds the column runs this with its historical models)."""
    columns = {f.name for f in values._meta.get_fields()}  # type: ignore[attr-defined]
    present = [name for name, _ in ANSWER_FIELDS if name in columns]
    done = 0
    last = 0
    while True:
        ids = list(records.objects.filter(answers_hash__isnull=True, pk__gt=last)  # type: ignore[attr-defined]
                   .order_by("pk").values_list("pk", flat=True)[:chunk])
        if not ids:
            return done
        last = ids[-1]
        rows = list(values.objects.filter(record_id__in=ids).values_list("record_id", *present))  # type: ignore[attr-defined]
        frame = pd.DataFrame.from_records(rows, columns=["record_id", *present])
        pks = frame["record_id"].astype("int64").tolist()
        hashes = [stored_value(h) for h in answers_hashes(frame)]
        if connection.vendor == "postgresql":  # one statement a chunk, its own transaction
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"UPDATE {connection.ops.quote_name(records._meta.db_table)} AS r "  # type: ignore[attr-defined]
                               "SET answers_hash = v.h FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, h) "
                               "WHERE r.id = v.id", [int_array(pks), int_array(hashes)])
        else:
            objs = [records(pk=pk, answers_hash=h) for pk, h in zip(pks, hashes, strict=True)]  # type: ignore[operator]
            records.objects.bulk_update(objs, ["answers_hash"], batch_size=2000)  # type: ignore[attr-defined]
        done += len(pks)
