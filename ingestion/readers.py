"""Read any supported file into a table of strings, keeping every header as written.

Every value stays text here ('' for empty) so that one validator types and checks all formats
the same way, and nothing is lost to a reader's guess (leading zeros, the business_number
backtick, duplicate headers).
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

FORMATS = ("csv", "xlsx", "json", "ndjson", "parquet")


class ReadError(ValueError):
    """The file cannot be read at all (format, encoding, structure)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class RawTable:
    headers: list[str]
    frame: pd.DataFrame  # columns 0..n-1 by position, every value a str ('' when empty)
    format: str
    encoding: str = ""


def detect_format(name: str) -> str:
    suffix = Path(name).suffix.lower().lstrip(".")
    aliases = {"xlsm": "xlsx", "jsonl": "ndjson", "pq": "parquet", "txt": "csv"}
    fmt = aliases.get(suffix, suffix)
    if fmt not in FORMATS:
        raise ReadError("unsupported_format", f"Unsupported file type {suffix!r}: use CSV, XLSX, JSON, NDJSON or Parquet.")
    return fmt


def read_table(path: str | Path, fmt: str | None = None) -> RawTable:
    path = Path(path)
    fmt = fmt or detect_format(path.name)
    if fmt == "csv":
        return _read_csv(path)
    if fmt == "xlsx":
        return _read_xlsx(path)
    if fmt in ("json", "ndjson"):
        return _read_json(path)
    if fmt == "parquet":
        return _read_parquet(path)
    raise ReadError("unsupported_format", f"Unsupported format {fmt!r}.")


def _sniff_encoding(head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still UTF-8.
        if exc.start < len(head) - 4:
            return "latin-1"
    return "utf-8"


def _csv_setup(path: Path) -> tuple[list[str], str, dict[str, object]]:
    with path.open("rb") as fh:
        head = fh.read(1 << 20)
    if not head.strip():
        raise ReadError("empty_file", "The file is empty.")
    encoding = _sniff_encoding(head)
    try:
        with path.open("r", encoding=encoding, newline="") as fh:
            headers = next(csv.reader(fh))
    except StopIteration as exc:
        raise ReadError("empty_file", "The file has no header row.") from exc
    except UnicodeDecodeError as exc:
        raise ReadError("bad_encoding", f"The file is not valid {encoding}: save it as UTF-8.") from exc
    headers = [h.strip().lstrip("\ufeff") for h in headers]
    names = [str(i) for i in range(len(headers))]
    options = {
        "read_options": pacsv.ReadOptions(column_names=names, skip_rows=1, encoding=encoding.replace("-sig", ""),
                                          block_size=8 << 20),
        "parse_options": pacsv.ParseOptions(newlines_in_values=True),
        "convert_options": pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                strings_can_be_null=False, quoted_strings_can_be_null=False),
    }
    return headers, encoding, options


def _to_frame(table: pa.Table | pa.RecordBatch, width: int) -> pd.DataFrame:
    frame = table.to_pandas()
    frame.columns = range(width)
    return frame


def _read_csv(path: Path) -> RawTable:
    headers, encoding, options = _csv_setup(path)
    try:
        table = pacsv.read_csv(path, **options)  # type: ignore[arg-type]
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise ReadError("malformed_csv", f"The CSV could not be parsed: {exc}") from exc
    return RawTable(headers=headers, frame=_to_frame(table, len(headers)), format="csv", encoding=encoding)


def iter_chunks(path: str | Path, fmt: str, chunk_rows: int) -> tuple[list[str], Iterator[pd.DataFrame]]:
    """Headers and the rows in frames of at most ``chunk_rows``; CSV is streamed (bounded memory)."""
    path = Path(path)
    if fmt != "csv":
        table = read_table(path, fmt)
        frames = (table.frame.iloc[i:i + chunk_rows].reset_index(drop=True)
                  for i in range(0, len(table.frame), chunk_rows))
        return table.headers, frames
    headers, _, options = _csv_setup(path)

    def stream() -> Iterator[pd.DataFrame]:
        pending: list[pa.RecordBatch] = []
        size = 0
        try:
            reader = pacsv.open_csv(path, **options)  # type: ignore[arg-type]
            for rb in reader:
                pending.append(rb)
                size += rb.num_rows
                while size >= chunk_rows:
                    table = pa.Table.from_batches(pending)
                    yield _to_frame(table.slice(0, chunk_rows), len(headers))
                    rest = table.slice(chunk_rows)
                    pending, size = rest.to_batches(), rest.num_rows
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise ReadError("malformed_csv", f"The CSV could not be parsed: {exc}") from exc
        if size:
            yield _to_frame(pa.Table.from_batches(pending), len(headers))

    return headers, stream()


def _cell_text(value: object) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _read_xlsx(path: Path) -> RawTable:
    from python_calamine import CalamineWorkbook

    try:
        sheet = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0)
        rows = sheet.to_python(skip_empty_area=False)
    except Exception as exc:  # calamine raises its own error types for broken workbooks
        raise ReadError("malformed_xlsx", f"The workbook could not be read: {exc}") from exc
    if not rows:
        raise ReadError("empty_file", "The workbook's first sheet is empty.")
    headers = [_cell_text(h).strip() for h in rows[0]]
    width = len(headers)
    body = rows[1:]
    if any(len(r) != width for r in body):
        body = [r[:width] + [""] * (width - len(r)) for r in body]
    columns = list(zip(*body, strict=True)) if body else [() for _ in range(width)]
    frame = pd.DataFrame({i: _xlsx_column(list(col)) for i, col in enumerate(columns)}, columns=range(width))
    return RawTable(headers=headers, frame=frame, format="xlsx")


def _xlsx_column(values: list[object]) -> pd.Series:
    """A column of cells as text.  Numeric columns are formatted by Arrow in one call ("3" for
    3.0, as a spreadsheet shows it); only mixed columns pay a Python call per cell."""
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind in ("floating", "integer", "mixed-integer-float"):
        # Integers stay integers (a 17-digit id must not pass through a float).
        arrow_type = pa.int64() if kind == "integer" else pa.float64()
        arr = pa.array([None if v == "" else v for v in values], type=arrow_type, from_pandas=True)
        text = pc.fill_null(pc.cast(arr, pa.string()), "")
        return pd.Series(text.to_numpy(zero_copy_only=False), dtype=object)
    if kind in ("string", "empty"):
        return pd.Series(["" if v is None else v for v in values], dtype=object)
    return pd.Series([_cell_text(v) for v in values], dtype=object)


def _arrow_to_text(table: pa.Table) -> RawTable:
    headers = [str(n).strip() for n in table.column_names]
    cols = {}
    for i, name in enumerate(table.column_names):
        col = table.column(name)
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            col = pc.binary_join(pc.cast(col, pa.list_(pa.string())), " ")
        elif not pa.types.is_string(col.type):
            if pa.types.is_floating(col.type):
                # NaN is how pandas writes "missing" into a float column: it is empty, not text "nan".
                col = pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col)
            col = pc.cast(col, pa.string())
        cols[str(i)] = pc.fill_null(col, "")
    frame = pa.table(cols).to_pandas() if cols else pd.DataFrame()
    frame.columns = range(len(headers))
    return RawTable(headers=headers, frame=frame, format="")


def _read_json(path: Path) -> RawTable:
    with path.open("rb") as fh:
        first = fh.read(4096).lstrip()
    if not first:
        raise ReadError("empty_file", "The file is empty.")
    try:
        if first.startswith(b"["):
            records = json.loads(path.read_bytes())
            if not all(isinstance(r, dict) for r in records):
                raise ReadError("malformed_json", "A JSON file must be an array of objects, or one object per line.")
            frame = pd.DataFrame.from_records(records)
            table = pa.Table.from_pandas(frame, preserve_index=False)
            fmt = "json"
        else:
            import pyarrow.json as pajson

            table = pajson.read_json(path)
            fmt = "ndjson"
    except (json.JSONDecodeError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ReadError("malformed_json", f"The JSON could not be parsed: {exc}") from exc
    raw = _arrow_to_text(table)
    raw.format = fmt
    return raw


def _read_parquet(path: Path) -> RawTable:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ReadError("malformed_parquet", f"The Parquet file could not be read: {exc}") from exc
    raw = _arrow_to_text(table)
    raw.format = "parquet"
    return raw


def read_bytes(data: bytes, name: str) -> RawTable:
    """Read an in-memory upload by writing it to a temporary file (readers want paths)."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=Path(name).suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        return read_table(tmp.name)


__all__ = ["FORMATS", "RawTable", "ReadError", "detect_format", "iter_chunks", "read_bytes", "read_table"]
