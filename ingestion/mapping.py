"""Map a file's headers to the contract's fields, by header text and position among duplicates."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


class MappableField(Protocol):
    name: str
    source_header: str
    source_position: int | None
    aliases: list[str]
    required: bool


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


@dataclass
class HeaderMapping:
    columns: list[dict[str, object]]  # [{"position", "header", "field"}], field None when unknown
    unknown: list[str] = field(default_factory=list)
    missing_required: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)

    def field_positions(self) -> dict[str, int]:
        return {str(c["field"]): int(str(c["position"])) for c in self.columns if c["field"]}

    def extra_positions(self) -> dict[str, list[int]]:
        """The further columns that map to a field already read from another column (``time_to_opd``
        in some records, ``TimeToOPD`` in others), by field, in file order: they fill the first
        column's empty cells (``fill_from_duplicates``)."""
        extra: dict[str, list[int]] = {}
        for c in self.columns:
            if c.get("duplicate_of"):
                extra.setdefault(str(c["duplicate_of"]), []).append(int(str(c["position"])))
        return extra

    def select(self, table: pa.Table, positions: dict[str, int] | None = None,
               extra: dict[str, list[int]] | None = None) -> pa.Table:
        """``table``'s columns (named "0".."n-1", text) for each mapped field, named by field, each
        field's empty cells (blank or spaces) taken from the next column that maps to it and has a
        value there.  Vectorised; a file without such columns costs one ``select``.  ``positions``
        and ``extra`` as this mapping gives them (passed in to compute them once per file)."""
        positions = self.field_positions() if positions is None else positions
        extra = self.extra_positions() if extra is None else extra
        if not extra:
            return table.select([str(p) for p in positions.values()]).rename_columns(list(positions))
        columns = []
        for name, pos in positions.items():
            column = table.column(str(pos))
            for other in extra.get(name, ()):
                empty = pc.equal(pc.utf8_trim_whitespace(column), "")
                column = pc.if_else(empty, table.column(str(other)), column)
            columns.append(column)
        return pa.table(columns, names=list(positions))

    def conflicts(self, table: pa.Table, positions: dict[str, int] | None = None,
                  extra: dict[str, list[int]] | None = None,
                  numeric: frozenset[str] | set[str] = frozenset()) -> dict[str, list[int]]:
        """Rows where a further column for a field holds a value that differs from the first
        column's (both filled), by field: ``select`` keeps the first, so the other is reported, not
        silently dropped.  In the ``numeric`` fields numbers compare as numbers (``5`` and ``5.0``
        agree); everything else as text after trimming (ids: ``0012`` is not ``12``).  Nothing to
        do, and nothing computed, without such columns."""
        positions = self.field_positions() if positions is None else positions
        extra = self.extra_positions() if extra is None else extra
        found: dict[str, list[int]] = {}
        for name, others in extra.items():
            first = table.column(str(positions[name])).to_pandas().astype("string").str.strip()
            as_numbers = name in numeric
            first_num = pd.to_numeric(first, errors="coerce") if as_numbers else None
            rows = pd.Series(False, index=first.index)
            for other in others:
                second = table.column(str(other)).to_pandas().astype("string").str.strip()
                filled = first.fillna("").ne("") & second.fillna("").ne("")
                differ = first.ne(second)
                if first_num is not None:
                    second_num = pd.to_numeric(second, errors="coerce")
                    numbers = first_num.notna() & second_num.notna()
                    differ = (numbers & first_num.ne(second_num)) | (~numbers & differ)
                rows |= (filled & differ).fillna(False).astype(bool)
            if rows.any():
                found[name] = [int(i) for i in rows.to_numpy().nonzero()[0]]
        return found


def map_headers(headers: Sequence[str], fields: Sequence[MappableField]) -> HeaderMapping:
    """The n-th occurrence of a repeated raw header maps to the n-th field read from that header
    (ordered by source position): ``VSLA_Profits`` twice gives UGX then USD."""
    by_header: dict[str, list[MappableField]] = {}
    for f in sorted(fields, key=lambda f: (f.source_position is None, f.source_position or 0)):
        if f.source_header:
            by_header.setdefault(f.source_header, []).append(f)
    by_name = {f.name.lower(): f for f in fields}
    by_alias: dict[str, MappableField] = {}
    for f in fields:
        for alias in (f.name, f.source_header, *f.aliases):
            if alias:
                by_alias.setdefault(_norm(alias), f)

    seen: dict[str, int] = {}
    used: set[str] = set()
    result = HeaderMapping(columns=[])
    for pos, header in enumerate(headers):
        occurrence = seen.get(header, 0)
        seen[header] = occurrence + 1
        target: MappableField | None = None
        exact = by_header.get(header, [])
        if occurrence < len(exact):
            target = exact[occurrence]
        elif header.lower() in by_name:
            target = by_name[header.lower()]
        else:
            mangled = re.fullmatch(r"(.+)\.(\d+)", header)  # pandas-style "VSLA_Profits.1"
            if mangled and mangled.group(1) in by_header and int(mangled.group(2)) < len(by_header[mangled.group(1)]):
                target = by_header[mangled.group(1)][int(mangled.group(2))]
            else:
                target = by_alias.get(_norm(header))
        name = target.name if target is not None else None
        column: dict[str, object] = {"position": pos, "header": header, "field": name}
        if name is not None and name in used:
            # Another spelling of a field already mapped: not the field's column (its header names
            # the field in findings), but its values fill the first column's empty cells.
            result.duplicated.append(header)
            column.update(field=None, duplicate_of=name)
        elif name is not None:
            used.add(name)
        else:
            result.unknown.append(header)
        result.columns.append(column)
    result.missing_required = [f.name for f in fields if f.required and f.name not in used]
    return result


def apply_mapping(frame: pd.DataFrame, mapping: HeaderMapping) -> pd.DataFrame:
    """The frame re-keyed by canonical field name (unknown columns dropped; a column that maps to
    a field already mapped fills that field's empty cells)."""
    positions = mapping.field_positions()
    out = frame[[positions[n] for n in positions]].copy()
    out.columns = list(positions)
    for name, others in mapping.extra_positions().items():
        for other in others:
            empty = out[name].astype(str).str.strip().eq("")
            out[name] = out[name].where(~empty, frame[other])
    return out
