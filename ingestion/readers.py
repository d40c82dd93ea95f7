"""Read any supported file into a table of strings, keeping every header as written.

Every value stays text here ('' for empty) so that one validator types and checks all formats
the same way, and nothing is lost to a reader's guess (leading zeros, the business_number
backtick, duplicate headers).
"""

from __future__ import annotations

import base64
import bisect
import codecs
import csv
import datetime
import html
import itertools
import json
import mmap
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from python_calamine import CalamineSheet, CalamineWorkbook

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


def _sniff_encoding(head: bytes, cut: bool = False, path: Path | None = None) -> str:
    """The encoding of a text file from its first bytes ``head`` (``cut``: the file goes on past
    them; ``path``: the file, to look at all of it when its encoding is not UTF-8).

    UTF-8 (with or without its mark) or UTF-16; a file that is not UTF-8 and holds no multi-byte
    UTF-8 sequence at all is single-byte: Windows-1252 (Excel's "ANSI" CSV, where 0x92 is ’), or
    Latin-1 when it has one of the bytes Windows-1252 leaves undefined.  A file that is UTF-8 but
    for a stray byte is refused, naming where that byte is, rather than read as Latin-1 with
    every accent garbled."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    sample = head[:4096]
    if b"\x00" in sample:
        # UTF-16 without its BOM: text in Latin script has a zero in every other byte.
        even, odd = sample[0::2], sample[1::2]
        if odd.count(0) > 0.4 * len(odd) and even.count(0) < 0.05 * len(even):
            return "utf-16-le"
        if even.count(0) > 0.4 * len(even) and odd.count(0) < 0.05 * len(odd):
            return "utf-16-be"
        # A few zero bytes in text are a few cells the validator rejects, wherever they are; a file
        # of zero and other control bytes is binary (a photo, a workbook renamed .csv): refused.
        controls = sum(sample.count(c) for c in _BINARY_CONTROLS)
        if controls > 0.01 * max(len(sample), 1024):
            raise ReadError("bad_encoding", "The file has zero bytes: it is not text in UTF-8, UTF-16 or Latin-1. "
                                            "Save it as CSV (UTF-8).")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of a sample (not of the file) is still UTF-8.
        if not (cut and exc.reason == "unexpected end of data"):
            return _not_utf8(head, exc.start, path)
    return "utf-8"


_BINARY_CONTROLS = [bytes([c]) for c in (*range(0, 9), 11, *range(14, 26), *range(27, 32))]
_CP1252_UNDEFINED = (b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d")
_ENCODING_SCAN_BLOCK = 64 << 20


def _not_utf8(head: bytes, at: int, path: Path | None) -> str:
    """The encoding of a file that is not valid UTF-8 at byte ``at``: refused when it holds any
    valid multi-byte UTF-8 sequence (UTF-8 with a stray byte), else single-byte (``_sniff_encoding``).
    The whole file is looked at when ``path`` is given, a block at a time; else ``head``."""
    if path is None:
        multi, undefined = _has_multibyte(head), any(b in head for b in _CP1252_UNDEFINED)
        line = head.count(b"\n", 0, at) or head.count(b"\r", 0, at)
    else:
        multi = undefined = False
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            undefined = any(mm.find(b) >= 0 for b in _CP1252_UNDEFINED)
            for start in range(0, len(mm), _ENCODING_SCAN_BLOCK):
                if _has_multibyte(mm[start:start + _ENCODING_SCAN_BLOCK + 3]):  # 3 more: a sequence on the seam
                    multi = True
                    break
            if multi:
                newline = b"\n" if mm.find(b"\n", 0, at) >= 0 else b"\r"
                line = sum(mm[s:min(s + _ENCODING_SCAN_BLOCK, at)].count(newline)
                           for s in range(0, at, _ENCODING_SCAN_BLOCK))
            byte = mm[at]
    if multi:
        byte = head[at] if path is None else byte
        raise ReadError("bad_encoding",
                        f"The file is UTF-8 but for a byte that is not (0x{byte:02X} at byte {at}, in row {line + 1}): "
                        "correct that cell, or save the file again as CSV UTF-8.")
    return "latin-1" if undefined else "cp1252"


def _has_multibyte(data: bytes) -> bool:
    """Whether ``data`` holds a valid multi-byte UTF-8 sequence: a lead byte followed by as many
    continuation bytes as it announces.  Vectorised; only for a file that is not UTF-8 throughout."""
    arr = np.frombuffer(data, dtype=np.uint8)
    lead = np.flatnonzero((arr >= 0xC2) & (arr <= 0xF4))
    if not lead.size:
        return False
    need = np.where(arr[lead] < 0xE0, 1, np.where(arr[lead] < 0xF0, 2, 3))
    ok = np.ones(lead.size, dtype=bool)
    padded = np.concatenate((arr, np.zeros(3, dtype=np.uint8)))  # past the end: no continuation
    for k in (1, 2, 3):
        cont = (padded[lead + k] & 0xC0) == 0x80
        ok &= cont | (need < k)
    return bool(ok.any())


def _first_invalid_utf8(path: Path, skip: int) -> int | None:
    """Where the file stops being UTF-8 past its first ``skip`` bytes (a character boundary), or
    None: a Latin-1 file whose first accented letter comes late would otherwise fail half-way
    through.  Arrow's validation reads ~10 GB/s (Python's decoder 0.7 s for the 1M-row benchmark
    file); a character cut by a block's end is carried into the next block."""
    carry = b""
    at = skip  # the file offset of ``carry``
    with path.open("rb") as fh:
        fh.seek(skip)
        while block := fh.read(8 << 20):
            data = carry + block
            cut = len(data)
            for back in range(1, min(4, len(data)) + 1):  # the last character's first byte
                lead = data[-back]
                if lead & 0xC0 != 0x80:
                    size = 1 if lead < 0x80 else 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4
                    if size > back:  # incomplete: it continues in the next block
                        cut = len(data) - back
                    break
            if not _utf8(data[:cut]):
                try:
                    data[:cut].decode("utf-8")
                except UnicodeDecodeError as exc:
                    return at + exc.start
            carry = data[cut:]
            at += cut
    return at if carry else None  # a character cut by the end of the file is not UTF-8


def _utf8(data: bytes) -> bool:
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64))
    text = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(data)])
    try:
        text.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


_BLANK_LINE = re.compile(rb"\n(?=\r?\n)")  # the end of a line followed by an empty line
_BLANK_SCAN_BLOCK = 64 << 20
_FIELD_START = np.zeros(256, dtype=bool)  # bytes after which a quote opens a quoted field (and the delimiter)
_FIELD_START[[ord("\n"), ord("\r")]] = True


def _blank_lines_as_rows(path: Path, encoding: str, delimiter: str, width: int) -> Path | None:
    """A copy of the CSV in which each empty line between rows holds empty cells instead, or None
    when it has none (the usual case: one ``find`` over the file).

    Arrow skips empty lines, which would shift every later row's number in the error report; a
    spreadsheet shows them as rows.  Kept as rows of empty cells, they are reported (required
    fields missing) at the row number a spreadsheet gives them.  An empty line inside a quoted value
    (``_inside_quotes``) and empty lines after the last row are left as they are.  For encodings
    that write a newline as one byte (UTF-8, Windows-1252, Latin-1)."""
    if encoding not in ("utf-8", "utf-8-sig", "latin-1", "cp1252"):
        return None
    starts = _FIELD_START.copy()
    starts[ord(delimiter)] = True
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        first_end = mm.find(b"\n")
        crlf = first_end > 0 and mm[first_end - 1:first_end] == b"\r"
        if mm.find(b"\r\n\r\n" if crlf else b"\n\n") < 0:  # one pass, in the file's own line endings
            return None
        tail_from = max(0, len(mm) - 65536)
        end = tail_from + len(mm[tail_from:].rstrip())  # past the last row: empty lines there are no rows
        cuts: list[int] = []
        inside = False
        start = 0
        while start < len(mm):
            stop = min(start + _BLANK_SCAN_BLOCK, len(mm))
            while stop < len(mm) and mm[stop - 1] == _QUOTE:  # a run of quotes is never cut in two
                stop += 1
            block = mm[start:stop + 2]  # two bytes more: a pattern across the seam
            before = mm[start - 1] if start else ord("\n")
            lines = [m.start() for m in _BLANK_LINE.finditer(block) if m.start() < stop - start and start + m.start() + 1 < end]
            states, inside = _inside_quotes(np.frombuffer(block, dtype=np.uint8)[:stop - start], before, starts,
                                            inside, np.array(lines, dtype=np.int64))
            cuts.extend(start + at + 1 for at, within in zip(lines, states.tolist(), strict=True) if not within)
            start = stop
        if not cuts:
            return None
        filler = (delimiter * (width - 1)).encode("ascii")
        out = tempfile.NamedTemporaryFile(prefix="rtv-csv-", suffix=".csv", delete=False)  # noqa: SIM115 - the caller removes it
        with out:
            last = 0
            for cut in cuts:
                out.write(mm[last:cut])
                out.write(filler)
                last = cut
            out.write(mm[last:])
    return Path(out.name)


def _inside_quotes(body: np.ndarray, before: int, starts: np.ndarray, inside: bool,
                   at: np.ndarray) -> tuple[np.ndarray, bool]:
    """Whether each position ``at`` of ``body`` is inside a quoted value, and whether its end is,
    as Arrow's parser (and Python's csv) reads quotes: only a quote that starts a field opens a
    quoted value; in one, two quotes are a quote and a single quote closes it; any other quote (an
    inch mark in ``Clus 5" west``) is a character of an unquoted value.

    Vectorised over runs of quotes, since only a run of odd length changes anything: one that
    starts a field flips the state (opens, or closes after a delimiter), any other leaves it
    outside (it closes a value or is a character).  So a position is inside when the flips since
    the last such reset are odd in number.  ``before`` is the byte before the body; ``inside`` the
    state there."""
    marks = np.flatnonzero(body == _QUOTE)
    if not marks.size:
        return np.full(len(at), inside), inside
    pos = marks  # where each run of odd length begins: every quote when no two are adjacent
    adjacent = marks[1:] == marks[:-1] + 1
    if adjacent.any():
        run_first = np.flatnonzero(np.concatenate(([True], ~adjacent)))
        run_end = np.empty_like(run_first)
        run_end[:-1] = run_first[1:]
        run_end[-1] = len(marks)
        pos = marks[run_first[((run_end - run_first) & 1).astype(bool)]]
    prev = body[pos - 1]
    if pos.size and pos[0] == 0:
        prev[0] = before
    flip = starts[prev]
    flips, resets = pos[flip], pos[~flip]
    where = np.append(at, len(body))
    count = np.searchsorted(flips, where)  # flips before each position
    last = np.searchsorted(resets, where)  # resets before it: counting starts again after the last
    since = np.where(last > 0, count - np.searchsorted(flips, resets[np.maximum(last - 1, 0)] if resets.size else where),
                     count + inside)
    states = since % 2 == 1
    return states[:-1], bool(states[-1])


def _csv_setup(path: Path) -> tuple[list[str], str, dict[str, object]]:
    with path.open("rb") as fh:
        head = fh.read(1 << 20)
    if not head.strip():
        raise ReadError("empty_file", "The file is empty.")
    cut = len(head) == 1 << 20 and path.stat().st_size > len(head)
    encoding = _sniff_encoding(head, cut, path)
    if encoding.startswith("utf-8") and cut:
        try:
            head.decode("utf-8")
            whole = len(head)
        except UnicodeDecodeError as exc:  # a character cut by the sample's end: checked from its start
            whole = exc.start
        invalid = _first_invalid_utf8(path, whole)
        if invalid is not None:
            encoding = _not_utf8(head, invalid, path)
    try:
        with path.open("r", encoding=encoding, newline="") as fh:
            first = fh.readline()
            # Excel's "Unicode text" is tab-separated, and some locales' CSV uses ';': the header
            # line decides (the delimiter it holds most of).
            delimiter = max((",", "\t", ";"), key=lambda d: (first.count(d), d == ","))
            fh.seek(0)
            headers = next(csv.reader(fh, delimiter=delimiter))
    except StopIteration as exc:
        raise ReadError("empty_file", "The file has no header row.") from exc
    except UnicodeDecodeError as exc:
        raise ReadError("bad_encoding", f"The file is not valid {encoding}: save it as UTF-8.") from exc
    headers = [h.strip().lstrip("\ufeff") for h in headers]
    names = [str(i) for i in range(len(headers))]
    options = {
        "read_options": pacsv.ReadOptions(column_names=names, skip_rows=1, encoding=encoding.replace("-sig", ""),
                                          block_size=8 << 20),
        "parse_options": pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        "convert_options": pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                strings_can_be_null=False, quoted_strings_can_be_null=False),
    }
    return headers, encoding, options


def _to_frame(table: pa.Table | pa.RecordBatch, width: int) -> pd.DataFrame:
    frame = table.to_pandas()
    frame.columns = range(width)
    return frame


def _csv_source(path: Path, headers: list[str], encoding: str,
                options: dict[str, object]) -> tuple[Path, str, dict[str, object]]:
    """The file to parse (a copy with empty lines as rows when it has them), its encoding and the
    options to read it with.  A UTF-16 file with empty lines is read through a UTF-8 copy, so that
    its empty lines count as rows too."""
    delimiter = options["parse_options"].delimiter  # type: ignore[attr-defined]
    if encoding.startswith("utf-16") and _utf16_has_empty_line(path):
        utf8 = _transcode_to_utf8(path, encoding, ".csv")
        spread = _blank_lines_as_rows(utf8, "utf-8", delimiter, len(headers))
        if spread is not None:
            utf8.unlink(missing_ok=True)
        read = options["read_options"]
        options = {**options, "read_options": pacsv.ReadOptions(
            column_names=read.column_names, skip_rows=read.skip_rows,  # type: ignore[attr-defined]
            encoding="utf-8", block_size=read.block_size)}  # type: ignore[attr-defined]
        return spread or utf8, "utf-8", options
    return _blank_lines_as_rows(path, encoding, delimiter, len(headers)) or path, encoding, options


def _utf16_has_empty_line(path: Path) -> bool:
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        return any(mm.find(pattern) >= 0 for pattern in (
            b"\n\x00\n\x00", b"\n\x00\r\x00\n\x00", b"\x00\n\x00\n", b"\x00\n\x00\r\x00\n"))


def _header_only(exc: Exception) -> bool:
    """Arrow's refusal of a file that is one header line without a line break after it (it cannot
    skip a line that does not end): such a file has no rows, as with the line break."""
    return isinstance(exc, pa.ArrowInvalid) and "Could not skip initial" in str(exc)


def _no_rows(width: int) -> pa.Table:
    return pa.table({str(i): pa.array([], pa.string()) for i in range(width)})


def _read_csv(path: Path) -> RawTable:
    headers, encoding, options = _csv_setup(path)
    source, _, options = _csv_source(path, headers, encoding, options)
    try:
        table = pacsv.read_csv(source, **options)  # type: ignore[arg-type]
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        if not _header_only(exc):
            raise ReadError("malformed_csv", f"The CSV could not be parsed: {exc}") from exc
        table = _no_rows(len(headers))
    finally:
        if source != path:
            source.unlink(missing_ok=True)
    table = table.slice(0, table.num_rows - _blank_tail(table))  # as iter_tables reads it
    return RawTable(headers=headers, frame=_to_frame(table, len(headers)), format="csv", encoding=encoding)


def iter_tables(path: str | Path, fmt: str, chunk_rows: int) -> tuple[list[str], Iterator[pa.Table]]:
    """Headers and the rows as Arrow tables of text (columns "0".."n-1", '' when empty), at most
    ``chunk_rows`` each.  CSV is streamed; the other formats are read once and converted to text a
    slice at a time, so no format builds a Python object per cell."""
    path = Path(path)
    if fmt == "csv":
        headers, tables = _csv_tables(path, chunk_rows)
        return headers, _without_blank_tail(tables)
    if fmt == "xlsx":
        headers, table = _xlsx_table(path)
        return headers, _slices(table, chunk_rows)
    if fmt in ("json", "ndjson"):
        typed, _ = _json_arrow(path)
    elif fmt == "parquet":
        typed = _parquet_arrow(path)
    else:
        raise ReadError("unsupported_format", f"Unsupported format {fmt!r}.")
    headers = [str(n).strip() for n in typed.column_names]
    return headers, (_text_columns(part) for part in _slices(typed, chunk_rows))


def iter_chunks(path: str | Path, fmt: str, chunk_rows: int) -> tuple[list[str], Iterator[pd.DataFrame]]:
    """``iter_tables`` as pandas frames with columns 0..n-1."""
    headers, tables = iter_tables(path, fmt, chunk_rows)
    return headers, (_to_frame(t, len(headers)) for t in tables)


BALANCE_CHUNKS = 8  # a file read whole is cut into at least this many chunks when it is big enough ...
BALANCE_MIN_ROWS = 5_000  # ... that none is smaller than this


def _slices(table: pa.Table, rows: int) -> Iterator[pa.Table]:
    """At most ``rows`` a slice, in equal slices: 100k rows make 8 of 12.5k rather than 5 of 20k, so
    two or four workers finish together instead of one taking a third chunk alone."""
    n = table.num_rows
    if n == 0:
        return
    count = max(-(-n // rows), min(BALANCE_CHUNKS, n // BALANCE_MIN_ROWS), 1)
    size = -(-n // count)
    for start in range(0, n, size):
        yield table.slice(start, size)


RAGGED_ROWS = b"rtv_ragged_rows"  # table metadata: JSON list of the rows (0-based in the table) not read


def _blank_tail(table: pa.Table) -> int:
    """How many rows at the end of ``table`` hold no value in any cell.  Looks at the last row
    first, so a table that ends with data (nearly all) costs one cell per column."""
    n = table.num_rows
    if n == 0 or table.num_columns == 0:
        return 0
    if any(not _blank_cell(column[n - 1].as_py()) for column in table.columns):
        return 0
    filled = np.zeros(n, dtype=bool)
    for column in table.columns:
        text = pc.utf8_trim_whitespace(column.cast(pa.string()))
        filled |= pc.fill_null(pc.not_equal(text, ""), False).to_numpy(zero_copy_only=False)
    last = np.flatnonzero(filled)
    return n if last.size == 0 else n - 1 - int(last[-1])


def _without_blank_tail(tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """The tables without the rows after the last one with a value: a spreadsheet saved as CSV
    with formulas copied down past the data ends in lines of delimiters only (",,,,"), which are
    not rows of the survey.  Blank rows between data rows stay, at their row numbers; a row not
    read (ragged, kept as empty cells) is never blank here."""
    held: list[pa.Table] = []
    for table in tables:
        ragged = RAGGED_ROWS in (table.schema.metadata or {})
        blank = 0 if ragged else _blank_tail(table)
        if blank == table.num_rows:
            held.append(table)
            continue
        yield from held
        held = []
        if blank:
            yield table.slice(0, table.num_rows - blank)
            held.append(table.slice(table.num_rows - blank))
        else:
            yield table


def _csv_tables(path: Path, chunk_rows: int) -> tuple[list[str], Iterator[pa.Table]]:
    headers, encoding, options = _csv_setup(path)

    def stream() -> Iterator[pa.Table]:
        pending: list[pa.RecordBatch] = []
        size = yielded = 0
        source, read_encoding, read_options = _csv_source(path, headers, encoding, options)
        try:
            try:
                reader = pacsv.open_csv(source, **read_options)  # type: ignore[arg-type]
                for rb in reader:
                    pending.append(rb)
                    size += rb.num_rows
                    while size >= chunk_rows:
                        table = pa.Table.from_batches(pending)
                        yield table.slice(0, chunk_rows)
                        yielded += chunk_rows
                        rest = table.slice(chunk_rows)
                        pending, size = rest.to_batches(), rest.num_rows
                if size:
                    yield pa.Table.from_batches(pending)
            except pa.ArrowInvalid as exc:
                if _header_only(exc):  # a header and nothing after it, not even a line break: no rows
                    return
                if "columns, got" not in str(exc):
                    raise
                # A row whose cells do not line up with the header (a stray delimiter): the rest of
                # the file is read by Python's csv module from the first row not yet handed out,
                # each such row kept in its place as empty cells and named in the table's metadata.
                yield from _csv_rows_in_place(source, read_encoding, read_options, len(headers), chunk_rows, skip=yielded)
        except (pa.ArrowInvalid, UnicodeDecodeError, csv.Error) as exc:
            raise ReadError("malformed_csv", f"The CSV could not be parsed: {exc}") from exc
        finally:
            if source != path:
                source.unlink(missing_ok=True)

    return headers, stream()


def _csv_rows_in_place(path: Path, encoding: str, options: dict[str, object], width: int, chunk_rows: int,
                       skip: int) -> Iterator[pa.Table]:
    """The data rows after the first ``skip``, as Arrow text tables of ``chunk_rows``; a row with
    more or fewer cells than the header becomes a row of empty cells, its place in the table
    listed under ``RAGGED_ROWS`` (the chunk reports it, at its spreadsheet row)."""
    delimiter = options["parse_options"].delimiter  # type: ignore[attr-defined]
    names = [str(i) for i in range(width)]
    empty = [""] * width
    with path.open("r", encoding=encoding, newline="") as fh:
        rows = csv.reader(fh, delimiter=delimiter)
        next(rows, None)  # the header
        for _ in range(skip):
            next(rows, None)
        block = list(itertools.islice(rows, chunk_rows))
        while block:
            following = list(itertools.islice(rows, chunk_rows))
            if not following:  # empty lines after the last row are no rows
                while block and not block[-1]:
                    block.pop()
                if not block:
                    return
            ragged = [i for i, row in enumerate(block) if len(row) != width and row]
            for i in ragged:
                block[i] = empty
            block = [row if row else empty for row in block]  # an empty line: a row of empty cells
            columns = list(zip(*block, strict=True))
            table = pa.table([pa.array(c, type=pa.string()) for c in columns], names=names)
            if ragged:
                table = table.replace_schema_metadata({RAGGED_ROWS: json.dumps(ragged).encode()})
            yield table
            block = following


def _cell_text(value: object) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime.timedelta):  # a duration cell, as Excel shows [h]:mm:ss: "30:00:00"
        seconds = round(value.total_seconds())
        hours, rest = divmod(abs(seconds), 3600)
        return f"{'-' if seconds < 0 else ''}{hours}:{rest // 60:02d}:{rest % 60:02d}"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _read_xlsx(path: Path) -> RawTable:
    headers, table = _xlsx_table(path)
    return RawTable(headers=headers, frame=_to_frame(table, len(headers)), format="xlsx")


XLSX_MAX_COLUMNS = 1024  # the survey has 75; a partner's extra columns fit many times over


def _xlsx_table(path: Path) -> tuple[list[str], pa.Table]:
    from python_calamine import CalamineWorkbook, SheetTypeEnum, SheetVisibleEnum

    scans = ThreadPoolExecutor(1, thread_name_prefix="xlsx-errors")
    try:
        book = CalamineWorkbook.from_path(str(path))
        # The cell scan (error cells, unsaved formulas: zlib and byte searches, without the GIL, and
        # a regular expression only where a formula is) runs beside calamine's parse of the same
        # sheet (Rust, also without it): on a second core it costs no time.
        first = next((m.name for m in book.sheets_metadata
                      if m.typ == SheetTypeEnum.WorkSheet and m.visible == SheetVisibleEnum.Visible), None)
        scan = scans.submit(_scan_cells, path, first) if first is not None else None
        sheet = _data_sheet(book)
        if sheet is not None and sheet.width > XLSX_MAX_COLUMNS:
            # Every row is read as wide as the sheet: one stray cell at column XFD makes each row
            # 16,384 cells (about 1 GB for a thousand rows) before a single value is looked at.
            raise ReadError("too_many_columns", f"The sheet is {sheet.width} columns wide (at most {XLSX_MAX_COLUMNS}): "
                                                "is there a stray cell far to the right? Delete the empty columns "
                                                "after the last one with data.")
        rows: list[list[Any]] = sheet.to_python(skip_empty_area=False) if sheet is not None else []
        merged = (sheet.merged_cell_ranges or []) if sheet is not None and rows else []
        cells = (scan.result() if scan is not None and sheet is not None and sheet.name == first
                 else _scan_cells(path, sheet.name) if sheet is not None else _CellScan(errors=[], unsaved=[]))
    except ReadError:
        raise
    except Exception as exc:  # calamine raises its own error types for broken workbooks
        raise ReadError("malformed_xlsx", f"The workbook could not be read: {exc}") from exc
    finally:
        scans.shutdown(wait=True, cancel_futures=True)
    if not rows:
        raise ReadError("empty_file", "The workbook has no sheet with data.")
    if cells.unsaved_count:
        # Every such cell would read as empty: values silently missing, row after row.  The fix is
        # one step for whoever sent the file, and nothing is stored from a half-read workbook.
        shown = ", ".join(f"{column_letters(c)}{r + 1}" + (f" (={f})" if f else "") for r, c, f in cells.unsaved)
        more = cells.unsaved_count - len(cells.unsaved)
        what = ("formula cell(s) whose saved values are placeholders (the workbook asks to be recalculated when "
                "opened)" if cells.recalc_on_load else "formula cell(s) with no saved result")
        raise ReadError("formulas_without_values",
                        f"The workbook has {cells.unsaved_count} {what}, e.g. {shown}"
                        f"{f' and {more} more' if more else ''}: it was written by a program and never calculated, "
                        "so those values cannot be read. Open it in Excel or LibreOffice, save it, and upload it again.")
    _fill_merged(rows, merged)
    for r, c, text in cells.errors:
        if r < len(rows) and c < len(rows[r]):
            rows[r][c] = text
    headers = [_cell_text(h).strip() for h in rows[0]]
    width = len(headers)
    body = rows[1:]
    del rows
    # Rows after the last one with a value are not rows of the file: formulas copied down a column
    # past the data (``=IF(A2="","",...)``) leave cells whose saved value is "", and calamine
    # counts them into the sheet.  Blank rows between data rows stay, as a spreadsheet numbers them.
    while body and all(_blank_cell(c) for c in body[-1]):
        body.pop()
    if any(len(r) != width for r in body):
        body = [r[:width] + [""] * (width - len(r)) for r in body]
    columns = list(zip(*body, strict=True)) if body else [() for _ in range(width)]
    del body
    arrays = []
    for i in range(width):
        arrays.append(_xlsx_column(columns[i]))
        columns[i] = ()  # let the cells go as soon as their column is text
    return headers, pa.table(arrays, names=[str(i) for i in range(width)])


def _blank_cell(cell: Any) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _data_sheet(book: CalamineWorkbook) -> CalamineSheet | None:
    """The sheet that holds the data: the first visible worksheet with a cell in it, in the
    workbook's order (a hidden ``choices`` list, a chart or an empty "Instructions" sheet before it
    is passed over); failing that the first hidden worksheet with one; None when none has."""
    from python_calamine import SheetTypeEnum, SheetVisibleEnum

    sheets = [m for m in book.sheets_metadata if m.typ == SheetTypeEnum.WorkSheet]
    ordered = ([m for m in sheets if m.visible == SheetVisibleEnum.Visible]
               + [m for m in sheets if m.visible != SheetVisibleEnum.Visible])
    for meta in ordered:
        sheet = book.get_sheet_by_name(meta.name)
        if sheet.height and sheet.width:
            return sheet
    return None


_CELL_ERROR = re.compile(rb'<c r="([A-Z]{1,3})([0-9]{1,7})"[^>]*?\bt="e"[^>]*>.*?<v>([^<]*)</v>', re.S)
_XML_BLOCK = 16 << 20


_XML_TAG = {name: re.compile(rb"<(?:\w+:)?" + name + rb"\b([^>]*)>") for name in (b"sheet", b"Relationship", b"calcPr")}
_XML_ATTR = re.compile(rb'([\w:]+)="([^"]*)"')


def _xml_elements(xml: bytes, tag: bytes) -> list[dict[str, str]]:
    """The attributes of each ``tag`` element (by local name; values unescaped).  A regular
    expression rather than an XML parser: two small, flat files, and no entity is ever expanded."""
    return [{k.decode().split(":")[-1]: html.unescape(v.decode("utf-8", "replace"))
             for k, v in _XML_ATTR.findall(m.group(1))} for m in _XML_TAG[tag].finditer(xml)]


def _sheet_xml_path(names: list[str], workbook: bytes, rels: bytes, sheet_name: str) -> str | None:
    """The zip member holding ``sheet_name``'s cells (workbook.xml names it, its rels place it)."""
    rid = next((el.get("id") for el in _xml_elements(workbook, b"sheet") if el.get("name") == sheet_name), None)
    target = next((el.get("Target") for el in _xml_elements(rels, b"Relationship") if el.get("Id") == rid),
                  None) if rid else None
    if not target:
        return None
    path = target.lstrip("/") if target.startswith("/") else f"xl/{target}"
    return path if path in names else None


# A formula cell with no saved result: ``<f>A2*B2</f><v />`` or ``<f>..</f>`` alone (what a library
# such as openpyxl writes; Excel and LibreOffice save every result).  Excel's empty-text result is
# ``t="str"`` with an empty ``<v>``: a saved value, and passed over.  Any namespace prefix (``<x:c>``,
# as the Open XML SDK writes), any attribute order, any white space between the elements.
_UNSAVED_FORMULA = re.compile(rb'<(?:\w+:)?c\b([^>]*)>\s*<(?:\w+:)?f\b[^>]*?(?:/>|>([^<]*)</(?:\w+:)?f>)\s*'
                              rb'(?:<(?:\w+:)?v\s*/>|<(?:\w+:)?v>\s*</(?:\w+:)?v>)?\s*</(?:\w+:)?c>')
# Any formula cell, whatever its saved value: in a workbook that asks to be recalculated when opened.
_ANY_FORMULA = re.compile(rb'<(?:\w+:)?c\b([^>]*)>\s*<(?:\w+:)?f\b[^>]*?(?:/>|>([^<]*)</(?:\w+:)?f>)')
_CELL_REF = re.compile(rb'\br="([A-Z]{1,3})([0-9]{1,7})"')
_TEXT_RESULT = re.compile(rb'\bt="str"')


@dataclass
class _CellScan:
    errors: list[tuple[int, int, str]]  # (row, column, text), 0-based
    unsaved: list[tuple[int, int, str]]  # (row, column, formula): formulas with no saved result
    unsaved_count: int = 0
    # The workbook asks to be fully recalculated when opened (``<calcPr fullCalcOnLoad="1"/>``): what
    # XlsxWriter and openpyxl write, with a placeholder result (XlsxWriter's is 0) for every formula.
    # Excel and LibreOffice drop the flag when they save, having calculated.  Every formula's saved
    # value is then a placeholder, not a result.
    recalc_on_load: bool = False


def _scan_sheet_block(body: bytes, scan: _CellScan) -> None:
    if b't="e"' in body:
        scan.errors += [(int(row) - 1, _column_index(col), text.decode("utf-8", "replace"))
                        for col, row, text in _CELL_ERROR.findall(body)]
    if b"<f" in body or b":f" in body:  # a sheet without formulas (nearly all data exports) stops here
        for m in (_ANY_FORMULA if scan.recalc_on_load else _UNSAVED_FORMULA).finditer(body):
            ref = _CELL_REF.search(m.group(1))
            if ref is None or (not scan.recalc_on_load and _TEXT_RESULT.search(m.group(1))):
                continue
            scan.unsaved_count += 1
            if len(scan.unsaved) < 3:
                scan.unsaved.append((int(ref.group(2)) - 1, _column_index(ref.group(1)),
                                     html.unescape((m.group(2) or b"").decode("utf-8", "replace"))))


def _scan_cells(path: Path, sheet_name: str) -> _CellScan:
    """Cells holding an Excel error (#DIV/0!, #N/A, ...), and formulas with no saved result (or only
    a placeholder: ``recalc_on_load``).
    calamine reads both as empty, which would make a broken formula look like an unanswered
    question; a CSV export holds the error's text, and so does this reader now.  The sheet's XML is
    scanned in blocks for ``t="e"`` and the signs of an unsaved formula (C-speed searches; most
    workbooks have neither) and parsed only around hits."""
    import zipfile

    scan = _CellScan(errors=[], unsaved=[])
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            workbook = z.read("xl/workbook.xml")
            member = _sheet_xml_path(names, workbook, z.read("xl/_rels/workbook.xml.rels"), sheet_name)
            scan.recalc_on_load = any(el.get("fullCalcOnLoad", "").lower() in ("1", "true")
                                      for el in _xml_elements(workbook, b"calcPr"))
            if member is None:
                return scan
            with z.open(member) as fh:
                carry = b""
                while block := fh.read(_XML_BLOCK):
                    data = carry + block
                    # A cell may run over the block's end: kept for the next (``<c `` or ``<x:c ``).
                    cut, prefixed = data.rfind(b"<c "), data.rfind(b":c ")
                    if prefixed > cut:
                        cut = max(cut, data.rfind(b"<", 0, prefixed))
                    body, carry = (data[:cut], data[cut:]) if cut > 0 else (data, b"")
                    _scan_sheet_block(body, scan)
                if carry:
                    _scan_sheet_block(carry, scan)
    except (KeyError, zipfile.BadZipFile, ValueError):
        return _CellScan(errors=[], unsaved=[])  # not the usual layout (calamine read it all the same)
    return scan


def column_letters(index: int) -> str:
    """0 -> "A", 26 -> "AA": a column as a spreadsheet names it."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _column_index(letters: bytes) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ch - 64
    return n - 1


def _fill_merged(rows: list[list[Any]], merged: Sequence[tuple[tuple[int, int], tuple[int, int]]]) -> None:
    """Each merged range of data cells holds its top-left value in every cell, as the spreadsheet
    shows it (calamine gives the others empty).  The header row is left as written."""
    for (top, left), (bottom, right) in merged:
        if top < 1 or top >= len(rows) or left >= len(rows[top]):
            continue
        value = rows[top][left]
        for r in range(top, min(bottom, len(rows) - 1) + 1):
            row = rows[r]
            for c in range(left, min(right, len(row) - 1) + 1):
                row[c] = value


_FLOAT, _INT, _STR, _OTHER = 0, 1, 2, 3
_CELL_KIND = {float: _FLOAT, int: _INT, str: _STR}


def _xlsx_column(values: Sequence[object]) -> pa.Array:
    """A column of cells as Arrow text, one vectorised step per kind of cell.

    Same text as a spreadsheet shows and as before: a column of numbers only is formatted by Arrow
    ("3" for 3.0); in a column that also holds text or blanks every cell reads as ``_cell_text``
    would (whole numbers without ".0", others as Python's repr, dates ISO, booleans 1/0)."""
    n = len(values)
    if not n:
        return pa.array([], type=pa.string())
    try:
        # Arrow's own type inference settles the usual columns in one C pass: numbers only
        # (integers stay integers: a 17-digit id must not pass through a float), or text only.
        whole = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        whole = None
    if whole is not None and (pa.types.is_int64(whole.type) or pa.types.is_float64(whole.type)):
        return pc.fill_null(pc.cast(whole, pa.string()), "")
    if whole is not None and pa.types.is_string(whole.type):
        return pc.fill_null(whole, "")
    kinds = np.fromiter(map(_CELL_KIND.get, map(type, values), itertools.repeat(_OTHER, n)), np.int8, n)
    present = set(np.unique(kinds).tolist())
    cells = np.asarray(values, dtype=object)
    parts: list[pa.Array] = []
    order: list[np.ndarray] = []
    for kind in sorted(present):
        idx = np.flatnonzero(kinds == kind)
        if kind == _FLOAT:
            parts.append(_float_cells_text(cells[idx].astype(np.float64)))
        elif kind == _STR:
            parts.append(pa.array(cells[idx], type=pa.string()))
        else:
            parts.append(pa.array([_cell_text(v) for v in cells[idx].tolist()], type=pa.string()))
        order.append(idx)
    inverse = np.empty(n, dtype=np.int64)
    inverse[np.concatenate(order)] = np.arange(n)
    return pa.concat_arrays(parts).take(pa.array(inverse))


def _float_cells_text(values: np.ndarray) -> pa.Array:
    """``_cell_text`` for an array of floats without a Python call per cell: whole numbers through
    int64, others through Arrow where its shortest round-trip text is Python's repr (fixed
    notation, 1e-4 <= |x| < 1e9); only the rest (huge, tiny, inf, nan) per cell."""
    out = np.empty(len(values), dtype=object)
    with np.errstate(invalid="ignore"):
        magnitude = np.abs(values)
        whole = np.isfinite(values) & (np.floor(values) == values) & (magnitude < 2.0**53)
        plain = np.isfinite(values) & ~whole & (magnitude >= 1e-4) & (magnitude < 1e9)
    if whole.any():
        out[whole] = pc.cast(pa.array(values[whole].astype(np.int64)), pa.string()).to_numpy(zero_copy_only=False)
    if plain.any():
        out[plain] = pc.cast(pa.array(values[plain]), pa.string()).to_numpy(zero_copy_only=False)
    rest = ~(whole | plain)
    if rest.any():
        out[rest] = [_cell_text(v) for v in values[rest].tolist()]
    return pa.array(out, type=pa.string())


def _text_columns(table: pa.Table) -> pa.Table:
    """Typed Arrow columns (JSON, Parquet) as text, named "0".."n-1".  A column Arrow cannot cast
    is read value by value; one that cannot be read at all stops the file naming that column."""
    cols = []
    for i, name in enumerate(table.column_names):
        column = table.column(i)
        try:
            text = _text_array(column)
        except RecursionError as exc:  # objects inside objects thousands deep: no survey answer
            raise ReadError("nested_too_deep", f"Column {name!r} holds values nested too deep to read; "
                                               "a survey answer is a plain value.") from exc
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            try:
                text = pa.array([None if v is None else _cell_text(v) for v in column.to_pylist()], type=pa.string())
            except Exception as exc:  # a type Arrow gives Python no value of
                raise ReadError("unreadable_column", f"Column {name!r} ({column.type}) could not be read as text: "
                                                     f"{exc}") from exc
        cols.append(pc.fill_null(text, ""))
    return pa.table(cols, names=[str(i) for i in range(len(cols))])


def _nested(kind: pa.DataType) -> bool:
    return pa.types.is_nested(kind) or pa.types.is_union(kind)


def _text_array(col: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """One typed column as text, null where it has no value: the same text the CSV and XLSX readers
    give for the same cell (booleans 1/0, whole floats without ".0"); a list of plain values as
    its values separated by spaces; an object (or a list of them) as its JSON text, so that a
    column nobody maps (KoBo's ``_attachments``) never stops the file."""
    kind = col.type
    if pa.types.is_dictionary(kind):
        return _text_array(pc.cast(col, kind.value_type))
    if pa.types.is_string(kind):
        return col
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        return _binary_text(col)
    if pa.types.is_boolean(kind):
        return pc.if_else(col, "1", "0")
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        if not _nested(kind.value_type):
            return pc.binary_join(pc.cast(col, pa.list_(pa.string())), " ")
        return _json_text(col)
    if _nested(kind):
        return _json_text(col)
    if pa.types.is_floating(kind):
        # NaN is how pandas writes "missing" into a float column: it is empty, not text "nan".
        col = pc.if_else(pc.is_nan(col), pa.scalar(None, kind), col)
    return pc.cast(col, pa.string())


def _binary_text(col: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Bytes as the text they hold when they are UTF-8, else as base64 (a GeoParquet ``geometry``
    column of WKB): a column nobody maps never stops the file."""
    try:
        return pc.cast(col, pa.string())
    except pa.ArrowInvalid:
        return pa.array([None if v is None else base64.b64encode(v).decode("ascii") for v in col.to_pylist()],
                        type=pa.string())


def _json_text(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Nested values as compact JSON text (one Python object per value: only for such columns)."""
    values = col.to_pylist()
    if pa.types.is_map(col.type):
        values = [None if v is None else dict(v) for v in values]
    return pa.array([None if v is None else _json_dumps(v) for v in values], type=pa.string())


def _json_dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _arrow_to_text(table: pa.Table) -> RawTable:
    headers = [str(n).strip() for n in table.column_names]
    frame = _to_frame(_text_columns(table), len(headers)) if headers else pd.DataFrame()
    return RawTable(headers=headers, frame=frame, format="")


def _read_json(path: Path) -> RawTable:
    table, fmt = _json_arrow(path)
    raw = _arrow_to_text(table)
    raw.format = fmt
    return raw


_JSON_BLOCK = 32 << 20  # Arrow's JSON reader: 1 MB by default, 1.5-2x slower on 650 MB
_SCAN_BLOCK = 32 << 20


def _json_arrow(path: Path) -> tuple[pa.Table, str]:
    """A JSON file as a typed Arrow table: NDJSON straight into Arrow's reader; an array of objects
    first rewritten, in bounded blocks, as one object per line into a temporary file (Python's
    json module took 20 s and a Python object per value for 300k rows; this takes a few).

    A UTF-8 byte order mark is skipped and a UTF-16 file read through a UTF-8 copy.  A field whose
    values are of more than one JSON type ("household_size": 4 in one record, "four" in another),
    which Arrow refuses, sends the file to ``_json_lines_text``: every value as text, so the
    validator rejects that row alone."""
    import pyarrow.json as pajson

    with path.open("rb") as fh:
        head = fh.read(4096)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in head:
        try:
            encoding = _sniff_encoding(head)
            if not encoding.startswith("utf-16"):  # a zero byte is never JSON text: it would be escaped
                raise ReadError("bad_encoding", encoding)
        except ReadError as exc:
            raise ReadError("bad_encoding", "The file has zero bytes: it is not JSON text in UTF-8 or UTF-16. "
                                            "Save it as UTF-8.") from exc
        copy = _transcode_to_utf8(path, encoding, ".json")
        try:
            return _json_arrow(copy)
        finally:
            copy.unlink(missing_ok=True)
    first = head.removeprefix(codecs.BOM_UTF8).lstrip()
    if not first:
        raise ReadError("empty_file", "The file is empty.")
    options = pajson.ReadOptions(block_size=_JSON_BLOCK)
    with tempfile.NamedTemporaryFile(suffix=".ndjson") as lines:
        fmt, source = "ndjson", path
        try:
            if first.startswith(b"["):
                fmt, source = "json", Path(lines.name)
                _json_array_to_lines(path, lines)
                lines.flush()
            with _first_record_not_null(source) as readable:
                table = pajson.read_json(readable, read_options=options)
            try:  # Arrow's JSON reader takes the bytes inside strings as they are: Latin-1 text gets through
                # (in a field's name too, which Arrow then cannot name: UnicodeDecodeError)
                table.validate(full=True)
            except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
                raise ReadError("bad_encoding", "The file is not valid UTF-8 (a JSON file must be): save it as "
                                                "UTF-8.") from exc
            return table, fmt
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            message = str(exc)
            if "Column() changed" in message:  # a line (an element) that is not an object
                raise ReadError("malformed_json",
                                "A JSON file must be an array of objects, or one object per line.") from exc
            if "Invalid UTF8" in message:
                raise ReadError("bad_encoding", "The file is not valid UTF-8: save the JSON as UTF-8.") from exc
            if not _TYPE_CHANGE.search(message):
                raise ReadError("malformed_json", f"The JSON could not be parsed: {exc}") from exc
        return _json_lines_text(source), fmt


@contextmanager
def _first_record_not_null(source: Path) -> Iterator[Path]:
    """``source``, or a copy whose first record reads ``{}`` when it is ``null``.  Arrow's JSON reader
    (pyarrow 26) crashes the process on a first record of ``null``; a later one it reads as a row
    of empty cells, which the validator rejects in its place.  The copy gives the first the same."""
    with source.open("rb") as fh:
        head = fh.read(4096)
    body = head.removeprefix(codecs.BOM_UTF8)
    start = len(head) - len(body) + (len(body) - len(body.lstrip()))
    token = head[start:start + 5]
    if not (token.startswith(b"null") and (len(token) == 4 or token[4:5].isspace())):
        yield source
        return
    with tempfile.NamedTemporaryFile(prefix="rtv-json-", suffix=".ndjson") as fixed, source.open("rb") as fh:
        fh.seek(start + 4)
        fixed.write(b"{}")
        shutil.copyfileobj(fh, fixed, 8 << 20)
        fixed.flush()
        yield Path(fixed.name)


_TYPE_CHANGE = re.compile(r"Column\(/.+\) changed from \w+ to \w+")
_JSON_FALLBACK_ROWS = 50_000


def _json_lines_text(path: Path) -> pa.Table:
    """One object per line read by Python's json module, every value as the text the typed path
    gives it (``_json_values_text``), a block of rows at a time.  Slower than Arrow's reader: only
    for a file whose fields Arrow cannot give one type."""
    names: dict[str, None] = {}  # columns in the order their keys first appear, as Arrow's reader
    blocks: list[dict[str, pa.Array]] = []
    sizes: list[int] = []
    row = 0
    with path.open("rb") as fh:
        while lines := list(itertools.islice(fh, _JSON_FALLBACK_ROWS)):
            records = []
            for line in lines:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except UnicodeDecodeError as exc:
                    raise ReadError("bad_encoding", f"The file is not valid UTF-8 (row {row}): save the JSON as "
                                                    "UTF-8.") from exc
                except ValueError as exc:
                    raise ReadError("malformed_json", f"The JSON could not be parsed: {exc} in row {row}") from exc
                if record is None:  # as Arrow's reader takes it: a row of empty cells, rejected in its place
                    record = {}
                if not isinstance(record, dict):
                    raise ReadError("malformed_json", "A JSON file must be an array of objects, or one object per line.")
                records.append(record)
                row += 1
            keys = dict.fromkeys(k for r in records for k in r)
            names.update(keys)
            blocks.append({k: _json_values_text([r.get(k) for r in records]) for k in keys})
            sizes.append(len(records))
    columns = []
    for name in names:
        parts = [b[name] if name in b else pa.nulls(n, pa.string()) for b, n in zip(blocks, sizes, strict=True)]
        columns.append(pa.chunked_array(parts, type=pa.string()))
    return pa.table(columns, names=list(names))


def _json_values_text(values: list[object]) -> pa.Array:
    """One field's values as text: through Arrow's types when they share one, else the numbers
    together through Arrow (as if the field held numbers only: 4 -> "4", 4.5 -> "4.5"), and each
    other value as the spreadsheet reader writes it (true -> "1"; objects as JSON text).  Either
    way the same text as the typed path gives the same value."""
    try:
        whole = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        whole = None
    if whole is not None:
        return _text_array(whole)
    cells = np.empty(len(values), dtype=object)
    numbers = [i for i, v in enumerate(values) if type(v) in (int, float)]
    others = [i for i, v in enumerate(values) if type(v) not in (int, float)]
    if numbers:
        try:
            text = _text_array(pa.array([values[i] for i in numbers], from_pandas=True))
            cells[numbers] = text.to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, OverflowError):  # an integer beyond 64 bits among them
            cells[numbers] = [_cell_text(values[i]) for i in numbers]
    for i in others:
        value = values[i]
        if isinstance(value, list) and not any(isinstance(v, dict | list) for v in value):
            cells[i] = " ".join(_cell_text(v) for v in value)
        elif isinstance(value, dict | list):
            cells[i] = _json_dumps(value)
        else:
            cells[i] = _cell_text(value)
    return pa.array(cells, type=pa.string())


def _transcode_to_utf8(path: Path, encoding: str, suffix: str) -> Path:
    """A UTF-8 copy of a text file (the caller removes it), decoded a block at a time."""
    decoder = codecs.getincrementaldecoder(encoding)()
    out = tempfile.NamedTemporaryFile(prefix="rtv-utf8-", suffix=suffix, delete=False)  # noqa: SIM115 - the caller removes it
    try:
        with out, path.open("rb") as src:
            while block := src.read(8 << 20):
                out.write(decoder.decode(block).encode("utf-8"))
            out.write(decoder.decode(b"", final=True).encode("utf-8"))
    except UnicodeDecodeError as exc:
        Path(out.name).unlink(missing_ok=True)
        raise ReadError("bad_encoding", f"The file is not valid {encoding}: save it as UTF-8.") from exc
    return Path(out.name)


def _json_array_to_lines(path: Path, out: IO[bytes]) -> None:
    """Rewrite ``[{...}, {...}]`` as ``{...}\\n{...}`` for Arrow's line reader: the outer brackets
    become spaces, the comma after each element a line break, and line breaks inside an element
    (only ever whitespace in JSON) spaces.

    Only brackets are visited one by one (two per record); whether one is inside a string is
    the parity of the quotes before it, counted by ``bytes.count`` less escaped quotes.  About
    0.05 s per 32 MB block, against 0.25 s for the same logic as numpy passes over every byte."""
    state = _ScanState()
    with path.open("rb") as src:
        if src.read(len(codecs.BOM_UTF8)) != codecs.BOM_UTF8:
            src.seek(0)
        while block := src.read(_SCAN_BLOCK):
            while block.endswith(b"\\"):  # never split an escape sequence across blocks
                more = src.read(1)
                if not more:
                    break
                block += more
            out.write(_scan_block(block, state))
    if state.depth != 0 or state.in_string:
        raise ReadError("malformed_json", "The JSON could not be parsed: the array is not closed.")


@dataclass
class _ScanState:
    in_string: bool = False
    depth: int = 0  # 1 inside the array, 2 inside an element
    comma_due: bool = False  # an element closed at the very end of the previous block
    elements: int = 0  # elements closed so far


def _bracket_positions(block: bytes) -> list[int]:
    found: list[int] = []
    for char in (b"{", b"}", b"[", b"]"):
        find = block.find
        at = find(char)
        while at != -1:
            found.append(at)
            at = find(char, at + 1)
    found.sort()
    return found


def _escaped_quotes(block: bytes) -> list[int]:
    """Positions of quotes preceded by an odd run of backslashes (the block never starts inside one)."""
    escaped = []
    at = block.find(b'\\"')
    while at != -1:
        run = 1
        while at - run >= 0 and block[at - run] == _BACKSLASH:
            run += 1
        if run % 2:
            escaped.append(at + 1)
        at = block.find(b'\\"', at + 1)
    return escaped


def _scan_block(block: bytes, state: _ScanState) -> bytearray:
    escaped = _escaped_quotes(block) if b"\\" in block else []
    count = block.count
    blanks: list[int] = []  # outer brackets
    ends: list[int] = []  # just after each element
    spans: list[tuple[int, int]] = []  # element extents, to look for line breaks inside them
    element_start = 0 if state.depth >= 2 else -1
    gap = 0  # where the text between two elements (white space and a comma) starts
    prev = 0
    in_string = state.in_string
    depth = state.depth
    for at in _bracket_positions(block):
        quotes = count(b'"', prev, at)
        if escaped:
            quotes -= bisect.bisect_left(escaped, at) - bisect.bisect_left(escaped, prev)
        if quotes % 2:
            in_string = not in_string
        prev = at
        if in_string:
            continue
        char = block[at]
        if char in (_OPEN_OBJ, _OPEN_ARR):
            if depth == 0:
                if char != _OPEN_ARR:
                    raise ReadError("malformed_json", "A JSON file must be an array of objects, or one object per line.")
                blanks.append(at)
                gap = at + 1
            elif depth == 1:
                _between_elements(block, gap, at, state)
                element_start = at
            depth += 1
        else:
            depth -= 1
            if depth < 0:
                raise ReadError("malformed_json", "The JSON could not be parsed: unbalanced brackets.")
            if depth == 0:
                _between_elements(block, gap, at, state)
                blanks.append(at)
            elif depth == 1:
                ends.append(at + 1)
                spans.append((element_start, at))
                element_start = -1
                state.elements += 1
                gap = at + 1
    quotes = count(b'"', prev) - (len(escaped) - bisect.bisect_left(escaped, prev) if escaped else 0)
    if depth == 1 and element_start == -1:  # between elements at the block's end: the gap goes on in the next
        _between_elements(block, gap, len(block), state)
    state.in_string = in_string ^ bool(quotes % 2)
    state.depth = depth
    if element_start != -1:
        spans.append((element_start, len(block)))
    if any(block.find(b"\n", a, b) != -1 or block.find(b"\r", a, b) != -1 for a, b in spans):
        block = block.translate(_NO_LINE_BREAKS)  # pretty-printed: one element per line for Arrow
    buf = bytearray(block)
    if state.comma_due:
        ends.insert(0, 0)
    state.comma_due = _break_after_elements(buf, ends)
    for at in blanks:
        buf[at] = _SPACE
    return buf


def _between_elements(block: bytes, start: int, end: int, state: _ScanState) -> None:
    """Only white space and commas may stand between the array's elements: anything else is an
    element that is not an object (``null``, a number, a string), which Arrow's line reader would
    misread, and on a first ``null`` crash on."""
    text = block[start:end].translate(None, b" \t\r\n,")
    if text:
        shown = text[:20].decode("utf-8", "replace")
        raise ReadError("malformed_json", f"A JSON file must be an array of objects: element {state.elements + 1} "
                                          f"is not an object ({shown}).")


_QUOTE, _BACKSLASH, _NEWLINE, _SPACE = ord('"'), ord("\\"), ord("\n"), ord(" ")
_OPEN_OBJ, _OPEN_ARR, _CLOSE_ARR, _COMMA = ord("{"), ord("["), ord("]"), ord(",")
_NO_LINE_BREAKS = bytes.maketrans(b"\r\n", b"  ")
_JSON_WHITESPACE = frozenset(b" \t\r\n")


def _break_after_elements(buf: bytearray, ends: list[int]) -> bool:
    """Turn the comma that follows each element (at ``ends``, possibly after whitespace) into a
    line break.  True when the block ended before that comma was reached."""
    size = len(buf)
    for pos in ends:
        while pos < size and buf[pos] in _JSON_WHITESPACE:
            pos += 1
        if pos == size:
            return True
        if buf[pos] == _COMMA:
            buf[pos] = _NEWLINE
        elif buf[pos] != _CLOSE_ARR:
            raise ReadError("malformed_json", "The JSON could not be parsed: expected ',' between array elements.")
    return False


def _parquet_arrow(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ReadError("malformed_parquet", f"The Parquet file could not be read: {exc}") from exc


def _read_parquet(path: Path) -> RawTable:
    raw = _arrow_to_text(_parquet_arrow(path))
    raw.format = "parquet"
    return raw


def read_bytes(data: bytes, name: str) -> RawTable:
    """Read an in-memory upload by writing it to a temporary file (readers want paths)."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=Path(name).suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        return read_table(tmp.name)


__all__ = ["FORMATS", "RawTable", "ReadError", "detect_format", "iter_chunks", "iter_tables", "read_bytes", "read_table"]
