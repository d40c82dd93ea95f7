"""Per-row error reports (CSV and XLSX), safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator

from .models import IngestionBatch, RowIssue

HEADER = ["row", "household_id", "column", "field", "rule", "severity", "value", "message"]
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def neutralise(value: object) -> str:
    """Stop a spreadsheet from running a cell as a formula (=, +, -, @, tab, CR at the start), while
    plain numbers such as -5 stay numbers."""
    text = "" if value is None else str(value)
    if text and text[0] in "=+-@\t\r" and not _NUMBER.match(text):
        return "'" + text
    return text


def _rows(batch: IngestionBatch) -> Iterator[list[object]]:
    issues = (RowIssue.objects.filter(batch=batch).order_by("row_number", "id")
              .values_list("row_number", "household_id", "column", "field", "rule", "severity", "value", "message"))
    for row in issues.iterator(chunk_size=5000):
        yield [row[0], *(neutralise(v) for v in row[1:])]


def error_report_csv(batch: IngestionBatch) -> Iterator[bytes]:
    """Stream the report as UTF-8 CSV with a BOM (so Excel reads accents right)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(HEADER)
    yield ("\ufeff" + buf.getvalue()).encode()
    buf.seek(0)
    buf.truncate()
    for i, row in enumerate(_rows(batch), start=1):
        writer.writerow(row)
        if i % 2000 == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    if buf.tell():
        yield buf.getvalue().encode()


def error_report_xlsx(batch: IngestionBatch) -> bytes:
    """The same rows as a workbook.  A control character that a workbook cannot hold (openpyxl
    refuses them: a 500 before) is shown as U+FFFD; the CSV report keeps the value as it is."""
    from openpyxl import Workbook
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("errors")
    ws.append(HEADER)
    for row in _rows(batch):
        ws.append([ILLEGAL_CHARACTERS_RE.sub("\ufffd", v) if isinstance(v, str) else v for v in row])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()
