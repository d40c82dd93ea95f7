"""Bulk writes: COPY on PostgreSQL (later issues set speed targets per-row inserts cannot meet),
bulk_create as the SQLite fallback."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache, lru_cache
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from django.db import connection, models

COPY_CHUNK_ROWS = 100_000


def _csv_chunks(frame: pd.DataFrame, columns: Sequence[str]) -> Iterator[bytes]:
    """CSV for COPY, written by Arrow's C++ writer (pandas' to_csv spent 40% of a chunk's time
    formatting floats).  Nulls are unquoted empties, which COPY reads as NULL; an aware timestamp is
    written with its offset ("2026-11-26 20:48:57.512859Z"), which PostgreSQL reads as it is."""
    table = pa.Table.from_pandas(frame[list(columns)], preserve_index=False)
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    for start in range(0, table.num_rows, COPY_CHUNK_ROWS):
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table.slice(start, COPY_CHUNK_ROWS), sink, write_options=options)
        yield sink.getvalue().to_pybytes()


def copy_frame(model: type[models.Model], frame: pd.DataFrame, columns: Sequence[str],
               not_null_text: Sequence[str] = ()) -> int:
    """Insert ``frame[columns]`` into ``model``'s table; NaN/None become NULL, except in the text
    columns named in ``not_null_text``, which get ''.  Runs inside the caller's transaction."""
    if frame.empty:
        return 0
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(model._meta.db_table)
        db_cols = [model._meta.get_field(c).column for c in columns]
        col_sql = ", ".join(connection.ops.quote_name(c) for c in db_cols)
        options = "FORMAT csv"
        if not_null_text:
            options += ", FORCE_NOT_NULL (" + ", ".join(
                connection.ops.quote_name(model._meta.get_field(c).column) for c in not_null_text) + ")"
        with connection.cursor() as cursor, cursor.cursor.copy(
                f"COPY {table} ({col_sql}) FROM STDIN WITH ({options})") as copy:
            for chunk in _csv_chunks(frame, columns):
                copy.write(chunk)
        return len(frame)
    records = frame[list(columns)].astype(object).where(frame[list(columns)].notna(), None).to_dict("records")
    json_cols = [c for c in columns if isinstance(model._meta.get_field(c), models.JSONField)]
    for rec in records:
        for c in json_cols:
            if isinstance(rec[c], str):
                rec[c] = json.loads(rec[c])
        for c in not_null_text:
            if rec[c] is None:
                rec[c] = ""
    model.objects.bulk_create([model(**r) for r in records], batch_size=1000)
    return len(records)


def int_array(values: Iterable[int | None]) -> str:
    """A PostgreSQL array literal of integers (NULL for None), for a ``%s::bigint[]`` parameter.
    psycopg dumps a Python list element by element: 29 ms for 25,000 ids, against 7.5 ms for this
    text, built and sent (a batch scoring chunk sends two such lists)."""
    return "{" + ",".join("NULL" if v is None else str(int(v)) for v in values) + "}"


def references_lock(references: dict[type[models.Model], Sequence[int]]) -> dict[type[models.Model], list[int]]:
    """A foreign-key check for a whole bulk write at once: lock the rows each model's keys name
    against deletion and key changes until the transaction ends (``FOR KEY SHARE``, the lock
    PostgreSQL's own row-by-row check takes), and return, per model, the keys that name no row
    (models with none missing are left out).  Call it inside the transaction that writes the
    referencing rows, before writing them.  One round trip for all the models.

    One statement instead of one trigger call per written row: COPY of 100,000 predictions naming
    100,000 records spent 0.7-0.85 s more in PostgreSQL 15's check of that key alone; this lock
    takes 0.15 s."""
    wanted = {model: sorted({int(i) for i in ids}) for model, ids in references.items()}
    wanted = {model: ids for model, ids in wanted.items() if ids}
    if not wanted:
        return {}
    quote = connection.ops.quote_name
    names = {model: (quote(model._meta.db_table), quote(model._meta.pk.column))  # type: ignore[union-attr]
             for model in wanted}
    missing: dict[type[models.Model], list[int]] = {}
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            counts = ", ".join(f"(SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {key} = ANY(%s::bigint[]) "
                               f"FOR KEY SHARE) AS locked)" for table, key in names.values())
            cursor.execute(f"SELECT {counts}", [int_array(ids) for ids in wanted.values()])
            found = cursor.fetchone()
            for (model, ids), count in zip(wanted.items(), found, strict=True):
                if count != len(ids):
                    table, key = names[model]
                    cursor.execute(f"SELECT k FROM unnest(%s::bigint[]) AS k WHERE NOT EXISTS "
                                   f"(SELECT 1 FROM {table} WHERE {key} = k)", [int_array(ids)])
                    missing[model] = [int(r[0]) for r in cursor.fetchall()]
            return missing
        # SQLite: one writer at a time, so no row lock is needed, only the existence check.
        for model, ids in wanted.items():
            table, key = names[model]
            present: set[int] = set()
            for start in range(0, len(ids), 10_000):
                part = ids[start:start + 10_000]
                cursor.execute(f"SELECT {key} FROM {table} WHERE {key} IN ({', '.join(['%s'] * len(part))})", part)
                present.update(int(r[0]) for r in cursor.fetchall())
            if len(present) != len(ids):
                missing[model] = [i for i in ids if i not in present]
    return missing


# ---- Several small inserts as one statement (PostgreSQL) -------------------------------------

Expression = tuple[str, list[object]]  # an SQL expression and its parameters


@cache
def _insert_head(model: type[models.Model]) -> tuple[str, tuple[models.Field, ...]]:  # type: ignore[type-arg]
    """``INSERT INTO table (columns)`` for every concrete column but an auto-incremented key."""
    fields = tuple(f for f in model._meta.concrete_fields
                   if not (f.primary_key and isinstance(f, models.AutoField | models.BigAutoField)))
    quote = connection.ops.quote_name
    return (f"INSERT INTO {quote(model._meta.db_table)} (" + ", ".join(quote(f.column) for f in fields) + ")",
            fields)


def insert_statement(model: type[models.Model], objs: Sequence[models.Model],
                     computed: dict[str, Callable[[models.Model], Expression]] | None = None) -> Expression:
    """``INSERT ... VALUES`` for unsaved instances, prepared the way ``Model.save`` prepares them
    (defaults, ``auto_now_add``, adapters), so it can be composed with others into one statement.
    ``computed`` gives an SQL expression instead of a value for some columns (by attname), e.g. a
    key that another part of the same statement returns."""
    head, fields = _insert_head(model)  # type: ignore[arg-type]
    computed = computed or {}
    rows: list[str] = []
    params: list[object] = []
    for obj in objs:
        cells: list[str] = []
        for f in fields:
            if f.attname in computed:
                sql, more = computed[f.attname](obj)
                cells.append(sql)
                params.extend(more)
            else:
                value = f.get_db_prep_save(f.pre_save(obj, True), connection=connection)
                cells.append(f.get_placeholder(value, None, connection) if hasattr(f, "get_placeholder") else "%s")
                params.append(value)
        rows.append("(" + ", ".join(cells) + ")")
    return head + " VALUES " + ", ".join(rows), params


MAX_PARAMS = 65_535


def insert_width(model: type[models.Model]) -> int:
    """The parameters one row of ``model`` takes in ``insert_statement``."""
    return len(_insert_head(model)[1])  # type: ignore[arg-type]


def insert_returning_keys(model: type[models.Model], objs: Sequence[models.Model]) -> None:
    """``bulk_create`` with, on PostgreSQL, the parameters sent apart from the statement
    (``server_bound_cursor``): sets each instance's key and marks it saved (SQLite: ``bulk_create``
    itself).  For a device batch of
    100 records Django's own spent ~25 ms of Python quoting and splicing its ~3,000 parameters (and
    re-parsing a statement too long for psycopg's cache); under load (bench/api.py, 2 runs each,
    alternating) batches of 100 went 1,549/1,485 against 1,437/1,454 records/s.  Keys come back in
    the order of the rows, as Django's ``bulk_create`` also relies on."""
    if not objs:
        return
    if connection.vendor != "postgresql":
        model._default_manager.bulk_create(objs)
        return
    for obj in objs:  # a foreign key to an instance saved since it was assigned takes its key now
        obj._prepare_related_fields_for_save(operation_name="bulk_create")
    per_statement = MAX_PARAMS // insert_width(model)  # PostgreSQL takes 65,535 parameters a statement
    for start in range(0, len(objs), per_statement):
        part = objs[start:start + per_statement]
        sql, params = insert_statement(model, part)
        with server_bound_cursor() as cur:
            cur.execute(f"{sql} RETURNING {connection.ops.quote_name(model._meta.pk.column)}", params)
            keys = [row[0] for row in cur.fetchall()]
        for obj, key in zip(part, keys, strict=True):
            obj.pk = key
            obj._state.adding, obj._state.db = False, connection.alias


@contextmanager
def server_bound_cursor() -> Iterator[Any]:
    """A PostgreSQL cursor that sends parameters apart from the statement, wrapped as Django wraps
    its own: errors arrive as ``django.db`` errors and queries are logged when they are.  Django's own
    cursor binds on the client: for a statement of a few hundred parameters, psycopg spent ~2 ms of
    Python per call quoting and splicing them in.  Statements are written with ``%s`` and sent with
    ``$n`` (psycopg's ``RawCursor``), converted once per distinct statement: psycopg's own cursor
    re-parses any statement over 4 kB on every call, ~0.4 ms for a device submission's.  (Statements
    are not prepared: Django sets psycopg's prepare_threshold to None.)  Returns no time zone
    loader: for statements that return no timestamps."""
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw = _numbered_cursor_class()(connection.connection)
    cursor = connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)
    with cursor:
        yield cursor


_PLACEHOLDER = re.compile(r"%s|%%")


@lru_cache(maxsize=256)
def numbered(sql: str) -> str:
    """``%s`` placeholders as ``$1, $2, ...`` (``%%`` as ``%``), as PostgreSQL takes them."""
    n = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal n
        if m.group() == "%%":
            return "%"
        n += 1
        return f"${n}"

    return _PLACEHOLDER.sub(repl, sql)


@cache
def _numbered_cursor_class() -> type:
    import psycopg

    class NumberedCursor(psycopg.RawCursor):  # type: ignore[type-arg]
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            return super().execute(numbered(query) if isinstance(query, str) else query, params, **kwargs)

    return NumberedCursor


