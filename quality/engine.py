"""The validator every door uses: schema rules compiled to vectorised masks.

Input is a frame of raw strings keyed by canonical field name; output is the typed frame and one
row per finding (``row``: 0-based position, ``field``, ``rule``, ``severity``, ``value``,
``message``).  No per-row Python loop over the data: each rule is one numpy mask over a column.
Columns are plain numpy arrays, not pandas Series, so a one-row device submission costs about a
millisecond and a million-row file is parsed by Arrow's C++ kernels.

Throughput (bench/quality.py): findings are built only for failing rows, straight into Arrow;
repeating text (districts, code lists) is checked once per distinct value; typed numeric input is
shared with the output frame (pandas copies on write) instead of copied, and so is typed text that
would come out as it went in; and big temporaries are avoided, since touching fresh memory costs
about as much as the checks themselves on small VMs.  Every pass over a million values counts: the
number checks skip what a column's bounds rule out and take findings as row indices, tolerances
and z-scores are worked out only for the rows that can fail, and medians are bracketed by a sample
and settled by counting.  Number text is cast by Arrow whole (looked at byte by byte only when
Arrow refuses some of it), and a large input's number columns are parsed on a few threads while
the other fields are checked.  ``tests/quality`` holds the outcome to the frozen engine's, exactly.

Rule codes (stable; reports, the generator's sidecar and tests use them):
  errors:   required, type, range, allowed, sum_identity, per_day_identity, currency_identity
  warnings: type (lenient fields), sentinel, outlier, pattern, unknown_value, duplicate_household
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Container, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api.internals import create_dataframe_from_blocks

from rtv.contract import ALL_FIELDS

from .rules import CompiledRule, RuleSet

ISSUE_COLUMNS = ["row", "field", "rule", "severity", "value", "message"]
ARROW_MIN_ROWS = 512  # below this, plain Python on the few strings beats Arrow's call overhead
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_NUMBER_RE = re.compile(_NUMBER, re.ASCII)  # ASCII digits only, as Arrow reads large columns
_BOOLEAN = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


class FieldLike(Protocol):
    name: str
    type: str
    required: bool
    allowed: list[float | int | str]
    min_value: float | None
    max_value: float | None
    warn_max: float | None
    sentinels: list[float]
    lenient: bool
    pattern: str


_F64, _OBJECT = np.dtype("float64"), np.dtype(object)


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """``frame.to_dict("records")`` by columns: the same Python values, without pandas walking the
    frame row by row (10 ms for one wide row, most of a submission's budget)."""
    columns = [str(c) for c in frame.columns]
    return [dict(zip(columns, row, strict=True)) for row in frame.to_numpy(dtype=object).tolist()]


def column_records(columns: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """One dict per row of equal-length arrays, with the plain Python values ``tolist`` gives."""
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*(v.tolist() for v in columns.values()), strict=True)]


class ValidationResult:
    """Typed values, findings (one row each: row, field, rule, severity, value, message) and scores
    (completeness, validity, consistency, score per row, 0-1).  A small input's findings stay plain
    lists until a frame is asked for: a device submission wants dicts, and building the frame was a
    quarter of its validation."""

    def __init__(self, typed: pd.DataFrame | None = None, issues: pd.DataFrame | None = None,
                 scores: pd.DataFrame | None = None, *, findings: _SmallCollector | None = None,
                 columns: dict[str, np.ndarray] | None = None, index: pd.Index | None = None,
                 score_columns: dict[str, np.ndarray] | None = None) -> None:
        assert scores is not None or score_columns is not None
        assert issues is not None or findings is not None
        assert typed is not None or (columns is not None and index is not None)
        self._scores, self._score_columns, self._issues, self._findings = scores, score_columns, issues, findings
        self._typed, self._columns, self._index = typed, columns, index

    @property
    def scores(self) -> pd.DataFrame:
        if self._scores is None:
            assert self._score_columns is not None
            self._scores = _small_frame(self._score_columns, pd.RangeIndex(len(self._score_columns["score"])))
        return self._scores

    def score_records(self) -> list[dict[str, float]]:
        """Each row's scores (completeness, validity, consistency, score) as a dict of floats."""
        return column_records(self._score_columns if self._scores is None and self._score_columns is not None else {
            str(k): self.scores[k].to_numpy(dtype="float64") for k in self.scores.columns})

    @property
    def typed(self) -> pd.DataFrame:
        if self._typed is None:
            assert self._columns is not None and self._index is not None
            self._typed = _small_frame(self._columns, self._index)
        return self._typed

    def typed_columns(self) -> Mapping[str, Any]:
        """The typed values by column: a small input's arrays as they are, else the frame."""
        if self._typed is None and self._columns is not None:
            return self._columns
        return self.typed

    def typed_records(self) -> list[dict[str, Any]]:
        """One dict per row with plain Python values: what the frame's object rows hold."""
        cols = self._columns
        if self._typed is None and cols is not None and all(v.dtype in (_F64, _OBJECT) for v in cols.values()):
            return column_records(cols)
        return frame_records(self.typed)

    @property
    def issues(self) -> pd.DataFrame:
        if self._issues is None:
            assert self._findings is not None
            self._issues = self._findings.frame()
        return self._issues

    def issue_records(self) -> list[dict[str, Any]]:
        """The findings as dicts, in frame order, with plain Python values."""
        if self._issues is None and self._findings is not None:
            return self._findings.records()
        return frame_records(self.issues)

    def error_rows(self) -> np.ndarray:
        errs = self.issues.loc[self.issues["severity"] == "error", "row"]
        return np.unique(errs.to_numpy(dtype=np.int64))


# Values a finding never repeats: where a household is (and any direct identifier).  Findings are
# stored in clear text, listed to every staff role and downloaded in error reports, while the record
# keeps these encrypted; the finding says what is wrong, the record holds the value.
WITHHELD_FIELDS: frozenset[str] = frozenset(f.name for f in ALL_FIELDS if f.pii in ("location", "direct"))
WITHHELD = "(withheld: personal data)"


def _withheld(idx: np.ndarray) -> np.ndarray:
    return np.full(idx.size, WITHHELD, dtype=object)


@dataclass
class _Collector:
    """Findings as one chunk per (field, rule): the failing rows, their values as text, and the rule's
    metadata.  Only failing rows are ever converted; the issues frame is built once, in Arrow."""

    rows: list[np.ndarray] = field(default_factory=list)
    meta: list[tuple[str, str, str, str]] = field(default_factory=list)
    values: list[pa.Array] = field(default_factory=list)

    def add(self, mask: np.ndarray, name: str, rule: str, severity: str,
            text: np.ndarray | pa.Array | _Text | Callable[[np.ndarray], np.ndarray], message: str) -> None:
        idx = np.flatnonzero(mask)
        if idx.size:
            self.add_rows(idx, name, rule, severity, text, message)

    def add_rows(self, idx: np.ndarray, name: str, rule: str, severity: str,
                 text: np.ndarray | pa.Array | _Text | Callable[[np.ndarray], np.ndarray], message: str) -> None:
        """A chunk of failing rows (ascending, not empty)."""
        if name in WITHHELD_FIELDS:
            text = _withheld
        self.rows.append(idx)
        self.meta.append((name, rule, severity, message))
        self.values.append(_value_text(text, idx))

    def failing(self, rules: RuleSet) -> dict[str, np.ndarray]:
        """Each score's failing rows (see ``quality_scores``), from the chunks' levels: no per-finding work."""
        level_of = rules.levels()
        picked: dict[str, list[np.ndarray]] = {name: [] for name in SCORE_LEVELS}
        for rows, (name, rule, _, _) in zip(self.rows, self.meta, strict=True):
            level = level_of.get(f"{rule}.{name}", "")
            for score, wanted in SCORE_LEVELS.items():
                if level == wanted and (score != "completeness" or rule == "required"):
                    picked[score].append(rows)
        return {k: np.concatenate(v) if v else np.zeros(0, dtype=np.int64) for k, v in picked.items()}

    def frame(self) -> pd.DataFrame:
        if not self.rows:
            return _NO_ISSUES.copy(deep=True)  # a fresh frame: building one costs about a millisecond
        sizes = np.array([len(r) for r in self.rows])
        if _ARROW_STRINGS is None:  # pandas without Arrow-backed strings: the plain construction
            return pd.DataFrame({
                "row": np.concatenate(self.rows),
                **{c: np.repeat([m[i] for m in self.meta], sizes) for i, c in enumerate(ISSUE_COLUMNS[1:4])},
                "value": np.concatenate([np.asarray(v.to_pylist(), dtype=object) for v in self.values]).astype(str),
                "message": np.repeat([m[3] for m in self.meta], sizes),
            })
        chunk = pa.array(np.repeat(np.arange(len(sizes), dtype=np.int32), sizes))

        def repeated(i: int) -> pd.Series:
            return _str_series(pc.take(pa.array([m[i] for m in self.meta], type=pa.large_string()), chunk))

        return pd.DataFrame({
            "row": np.concatenate(self.rows),
            "field": repeated(0), "rule": repeated(1), "severity": repeated(2),
            "value": _str_series(pa.concat_arrays([v.cast(pa.large_string()) for v in self.values])),
            "message": repeated(3),
        }, copy=False)


_NO_ISSUES = pd.DataFrame({c: pd.Series(dtype="int64" if c == "row" else "object") for c in ISSUE_COLUMNS})


def _str_series(arr: pa.Array) -> pd.Series:
    """A pandas string column over an Arrow array, with the dtype pandas gives a column of str objects."""
    assert _ARROW_STRINGS is not None
    return pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([arr]), dtype=_ARROW_STRINGS), copy=False)


def _inferred_string_dtype() -> pd.StringDtype | None:
    dtype = pd.Series(np.array(["a"], dtype=object)).dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        return dtype
    return None


_ARROW_STRINGS = _inferred_string_dtype()


def _value_text(text: np.ndarray | pa.Array | _Text | Callable[[np.ndarray], np.ndarray], idx: np.ndarray) -> pa.Array:
    """The failing rows' values as text, as ``str(value)`` in a numpy unicode array would give them."""
    if isinstance(text, _Text | pa.Array):
        taken = text.take(idx) if isinstance(text, _Text) else text.take(pa.array(idx))
        return pc.utf8_rtrim(taken, characters="\x00")  # numpy's unicode strings drop trailing NULs
    picked = np.asarray(text(idx) if callable(text) else np.asarray(text)[idx])
    if picked.dtype == np.float64 and picked.size > 64:
        # Findings repeat a few numbers (answers in whole minutes): each distinct number is written out
        # once, told apart by its bits (so -0.0 and 0.0 stay apart, as their text does).
        codes, distinct = pd.factorize(np.ascontiguousarray(picked).view(np.int64))
        words = pa.array(distinct.view(np.float64).astype(object).astype(str), type=pa.string())
        return words.take(pa.array(codes))
    return pa.array(picked.astype(object).astype(str), type=pa.string())


def _fmt(v: float | int | str | None) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _strings(col: pd.Series | np.ndarray | list[object]) -> np.ndarray | pa.Array:
    """Stripped text ('' for missing): an Arrow array for large inputs, an object array otherwise."""
    if len(col) >= ARROW_MIN_ROWS:
        return _trimmed(_filled(_arrow(col)))[0]
    items = col.tolist() if isinstance(col, pd.Series | np.ndarray) else col
    return np.array(["" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v).strip()
                     for v in items], dtype=object)


def _arrow(col: object) -> pa.Array:
    arr = pa.array(col, type=pa.large_string(), from_pandas=True)  # pandas' own type: no conversion
    if isinstance(arr, pa.ChunkedArray):  # pandas' Arrow-backed strings arrive chunked
        arr = arr.combine_chunks()
    return arr


def _filled(arr: pa.Array) -> pa.Array:
    """Nulls as '' (a no-op without nulls, which fill_null would still copy)."""
    return pc.fill_null(arr, "") if arr.null_count else arr


def _layout(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The offsets (one more than the rows) and the UTF-8 bytes of a string array, as numpy views."""
    buffers = arr.buffers()
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(buffers[1], dtype=width)[arr.offset:arr.offset + len(arr) + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, dtype=np.uint8)
    return offsets, data[offsets[0]:offsets[-1]] if len(offsets) else data[:0]


def _trimmed(arr: pa.Array) -> tuple[pa.Array, bool]:
    """``utf8_trim_whitespace``, skipped when no byte could be white space (ASCII controls, space and any
    non-ASCII byte): one byte scan instead of a per-string pass.  Returns the text and whether it ran."""
    _, data = _layout(arr)
    if data.size and (int(data.min()) < 0x21 or int(data.max()) > 0x7E):  # reductions: no temporaries
        return pc.utf8_trim_whitespace(arr), True
    return arr, False


def _blank(arr: pa.Array) -> np.ndarray:
    """Rows holding '' (of a string array without nulls), from the offsets alone."""
    offsets, _ = _layout(arr)
    return offsets[1:] == offsets[:-1]


def _numbers(text: np.ndarray | pa.Array, empty: np.ndarray | None = None) -> np.ndarray:
    """float64 of each string; NaN where empty or not a number (no 'nan', 'inf' or '1,5').

    A string is a number when it fully matches ``_NUMBER`` over ASCII (no other digits) and is finite.
    Large columns are parsed by Arrow, the cheapest way that is sure to decide as that grammar does:
    one ASCII digit per row (codes) needs no parsing; else Arrow casts the whole column, and only
    when it refuses a string are the strings outside the grammar's characters found and set aside
    (see ``_cast_numbers``)."""
    if isinstance(text, pa.Array):
        if empty is None:
            empty = _blank(text)
        values = _single_digits(text, empty)
        if values is not None:
            return values
        values = _cast_numbers(text, empty)
        if values is None:
            values = _scanned_numbers(text, empty)
    else:  # a few strings: the grammar, then Python's float
        values = np.array([float(s) if _NUMBER_RE.match(s) else np.nan for s in text], dtype="float64")
    infinite = np.isinf(values)
    if infinite.any():  # too large for a float: not data, whatever the input's size
        values[infinite] = np.nan
    return values


def _single_digits(text: pa.Array, empty: np.ndarray) -> np.ndarray | None:
    """The values of a column holding one ASCII digit in each row that is not empty (NaN there), from
    the bytes alone (Arrow spends most of its cast on each string's overhead); None for any other."""
    _, data = _layout(text)
    present = len(empty) - int(np.count_nonzero(empty))
    if data.size != present:  # each row that is not empty holds a byte at least: here exactly one
        return None
    if data.size and (int(data.min()) < 0x30 or int(data.max()) > 0x39):
        return None
    if not present:
        return np.full(len(empty), np.nan)
    digits = data.astype(np.float64)
    digits -= 0x30
    if present == len(empty):
        return digits
    values = np.full(len(empty), np.nan)
    values[~empty] = digits
    return values


_CAST_CHUNK = 1 << 16  # rows cast at a time: a string Arrow refuses costs the rest of its chunk, not a column


def _cast_numbers(text: pa.Array, empty: np.ndarray) -> np.ndarray | None:
    """Arrow's float64 of every string (NaN where empty), or None when Arrow refuses one of them.

    Arrow accepts exactly the grammar's strings, and beyond them only spellings of NaN and of infinity
    ('nan', 'NaN(1)', '-Infinity'...: ``tests/quality/test_number_typing.py`` holds it to that), which
    ``_numbers`` turns into NaN as it does numbers too large for a float.  So when Arrow accepts every
    string, its values are the grammar's, without looking for the characters the grammar excludes.
    The column is cast a chunk at a time so that a refused string (a column with a few typos) stops
    the work early: Arrow itself would parse the whole column before refusing it."""
    arr = text
    if empty.any() or text.null_count:
        valid = ~empty
        if text.offset:
            valid = np.concatenate([np.zeros(text.offset, dtype=bool), valid])
        buffers = text.buffers()
        arr = pa.Array.from_buffers(text.type, len(text), [pa.py_buffer(np.packbits(valid, bitorder="little")),
                                                           buffers[1], buffers[2]], offset=text.offset)
    parts = []
    try:
        for start in range(0, len(arr), _CAST_CHUNK):
            parts.append(pc.cast(arr.slice(start, _CAST_CHUNK), pa.float64()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    values = pa.chunked_array(parts, type=pa.float64()).to_numpy()
    return values if values.flags.writeable else values.copy()


def _scanned_numbers(text: pa.Array, empty: np.ndarray) -> np.ndarray:
    """``_numbers`` of a column Arrow refuses as a whole (infinities left in)."""
    # Only strings made of digits, '.', 'e', 'E', '+' and '-' can be numbers: a byte scan finds the
    # others and Arrow parses the rest, as nulls elsewhere (its grammar over these characters is
    # the regex's: when it refuses one, the regex decides, as before).
    offsets, data = _layout(text)
    candidate = ~empty
    if data.size and (int(data.min()) < 0x30 or int(data.max()) > 0x39):  # not all digits
        number = (data >= 0x30) & (data <= 0x39)
        for byte in b".eE+-":
            number |= data == byte
        odd = np.flatnonzero(~number) + offsets[0]
        if odd.size:  # the row holding each odd byte (empty rows hold none)
            candidate[np.searchsorted(offsets, odd, side="right") - 1] = False
    buffers = text.buffers()
    if text.offset:
        candidate = np.concatenate([np.zeros(text.offset, dtype=bool), candidate])
    masked = pa.Array.from_buffers(text.type, len(text), [pa.py_buffer(np.packbits(candidate, bitorder="little")),
                                                          buffers[1], buffers[2]], offset=text.offset)
    try:
        parsed = pc.cast(masked, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # e.g. '1.2.3': the regex decides
        valid = pc.match_substring_regex(text, _NUMBER)
        parsed = pc.cast(pc.if_else(valid, text, pa.scalar(None, text.type)), pa.float64())
    return parsed.to_numpy(zero_copy_only=False, writable=True).astype("float64", copy=False)


class _Text:
    """A large text column, stripped ('' for missing).  When values repeat (districts, villages, code
    lists), held as its distinct values plus one code per row, so every check runs once per distinct
    value; otherwise one Arrow array.  ``source``: the column's own str objects when they need no
    stripping (re-validation of typed values), reused for the typed output instead of new strings.
    ``unchanged``: the typed column would hold what the input holds, value for value and type for
    type (text already stripped, of type str, and None for every blank), so the input can be kept."""

    SAMPLE = 4096

    def __init__(self, column: object) -> None:
        self.codes: np.ndarray | None = None
        self.blank = -1
        self.source: np.ndarray | None = None
        self.unchanged = False
        objects = _object_column(column)
        if objects is not None and (coded := self._by_identity(objects)) is not None:
            codes, lookup, dictionary, plain = coded
            self.unchanged = self._coded(codes, dictionary, lookup) and plain
            return
        if objects is not None and self._repeats(len(pd.unique(objects[:self.SAMPLE])), len(objects)):
            codes, uniques = pd.factorize(objects)  # None and NaN: -1
            self._coded(codes, pa.array(uniques, type=pa.string(), from_pandas=True))
            return
        arr = _arrow(column)
        if self._repeats(len(arr.slice(0, self.SAMPLE).unique()), len(arr)):
            encoded = arr.dictionary_encode()
            self._coded(pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False), encoded.dictionary)
            return
        untrimmed = _filled(arr)
        self.values, trimmed = _trimmed(untrimmed)
        self.empty = _blank(self.values)
        if (objects is not None and (not trimmed or _nbytes(self.values) == _nbytes(untrimmed))
                and pd.api.types.infer_dtype(objects, skipna=True) == "string"):
            self.source = objects  # the output's objects (a copy with None for blanks): unchanged if already so
            address = _addresses(objects)
            self.unchanged = address is not None and bool((address[self.empty] == id(None)).all())

    def _by_identity(self, objects: np.ndarray) -> tuple[np.ndarray, np.ndarray, pa.Array, bool] | None:
        """Codes and distinct values of an object column whose rows repeat the same str objects (typed
        values are built that way): grouped by object address, which hashes integers instead of
        strings.  Equal strings held by different objects stay apart here and are merged by ``_coded``
        (as it merges values equal once stripped), so the outcome is the factorize by value's.
        Returns each row's object number, each object's value number (-1: missing), the values, and
        whether every object is None or of type str (not a subclass), as the typed output's are."""
        address = _addresses(objects)
        if address is None or not self._repeats(len(pd.unique(address[:self.SAMPLE])), len(objects)):
            return None
        codes, distinct = pd.factorize(address)
        where = np.full(len(distinct), -1, dtype=np.intp)  # a row holding each object
        head = codes[:self.SAMPLE]
        where[head] = np.arange(len(head), dtype=np.intp)
        if (where < 0).any():  # some object first appears further down
            where[codes] = np.arange(len(codes), dtype=np.intp)
        uniques = objects[where]
        missing = pd.isna(uniques)  # None, NaN, NA: -1, as factorize by value gives them
        plain = bool((distinct[missing] == id(None)).all())
        lookup = np.full(len(uniques), -1, dtype=np.intp)
        lookup[~missing] = np.arange(int((~missing).sum()), dtype=np.intp)
        uniques = uniques[~missing]
        # one look per distinct object, and only when they are few (the flag only saves a copy)
        plain = plain and len(uniques) <= self.SAMPLE and all(type(u) is str for u in uniques.tolist())
        return codes, lookup, pa.array(uniques, type=pa.string(), from_pandas=True), plain

    def _repeats(self, distinct: int, n: int) -> bool:
        return distinct * 8 <= min(n, self.SAMPLE)

    def _coded(self, codes: np.ndarray, dictionary: pa.Array, lookup: np.ndarray | None = None) -> bool:
        """Takes the codes and their values (the codes numbering the values, or ``lookup`` doing so;
        -1: missing); returns whether every value was already stripped and none is '' (then only
        missing rows are blank)."""
        trimmed = pc.utf8_trim_whitespace(dictionary)
        words = pa.concat_arrays([trimmed, pa.array([""], type=dictionary.type)])
        remap, distinct = pd.factorize(words.to_numpy(zero_copy_only=False))  # stripping can merge values
        if lookup is None:
            self.codes = remap[np.where(codes < 0, len(words) - 1, codes)]
        else:  # composed on the few distinct codes first: one gather over the rows
            self.codes = remap[np.where(lookup < 0, len(words) - 1, lookup)][codes]
        self.values = pa.array(distinct, type=pa.string())
        self.blank = int(remap[-1])
        self.empty = self.codes == self.blank
        return bool(pc.all(pc.and_(pc.equal(trimmed, dictionary), pc.greater(pc.binary_length(dictionary), 0)),
                           skip_nulls=False, min_count=0).as_py())

    def rows(self, per_value: np.ndarray) -> np.ndarray:
        """A per-value mask (over ``values``) as a per-row mask."""
        return per_value if self.codes is None else per_value[self.codes]

    def take(self, idx: np.ndarray) -> pa.Array:
        return self.values.take(pa.array(idx if self.codes is None else self.codes[idx]))

    def objects(self) -> np.ndarray:
        """The typed column: str objects, None for blank."""
        if self.codes is not None:
            distinct = self.values.to_numpy(zero_copy_only=False).astype(object, copy=True)
            distinct[self.blank] = None
            return distinct[self.codes]
        out = np.array(self.source if self.source is not None else self.values.to_numpy(zero_copy_only=False),
                       dtype=object, copy=True)
        out[self.empty] = None
        return out

    def groups(self) -> np.ndarray | None:
        """Group codes of the typed values (-1 for blank), when coded."""
        return None if self.codes is None else np.where(self.empty, -1, self.codes)


def _object_column(column: object) -> np.ndarray | None:
    if isinstance(column, pd.Series) and column.dtype == object:
        return column.to_numpy()
    if isinstance(column, np.ndarray) and column.dtype == object:
        return column
    return None


def _addresses(objects: np.ndarray) -> np.ndarray | None:
    """The objects' addresses (as ``id`` gives them), as integers: a view, no per-object work."""
    try:
        address = np.frombuffer(np.ascontiguousarray(objects), dtype=np.intp)
    except (TypeError, ValueError, BufferError):
        return None
    return address if len(address) == len(objects) else None


def _nbytes(arr: pa.Array) -> int:
    offsets, _ = _layout(arr)
    return int(offsets[-1] - offsets[0]) if len(offsets) else 0


def _blank_to_none(s: np.ndarray, empty: np.ndarray) -> np.ndarray:
    out = np.array(s, dtype=object, copy=True)
    out[empty] = None
    return out


def _as_objects(text: np.ndarray | pa.Array) -> np.ndarray:
    return text.to_numpy(zero_copy_only=False) if isinstance(text, pa.Array) else text


_LITERALS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_ :/,@#")
_Atom = tuple[np.ndarray, int, int | None]  # the bytes it takes (a 256-entry table), repeated min to max times


def _byte_pattern(core: str) -> list[_Atom] | None:
    """A regex made of ASCII literals, ``\\d`` and plain ``[...]`` classes, each with an optional
    ``{n}``, ``{n,m}``, ``{n,}``, ``?``, ``+`` or ``*`` (a variable count on the last atom only), as atoms;
    None for anything else.  Such a pattern matches ASCII text only, so bytes decide as RE2 does."""
    atoms: list[_Atom] = []
    i = 0
    while i < len(core):
        table = np.zeros(256, dtype=bool)
        c = core[i]
        if c == "\\" and core[i + 1:i + 2] == "d":
            table[0x30:0x3A] = True
            i += 2
        elif c == "[":
            end = core.find("]", i + 1)
            body = core[i + 1:end]
            if end < 0 or not body or body[0] == "^" or not body.isascii() or any(b in body for b in "\\[]"):
                return None
            k = 0
            while k < len(body):
                if k + 2 < len(body) and body[k + 1] == "-":
                    if body[k] > body[k + 2]:
                        return None
                    table[ord(body[k]):ord(body[k + 2]) + 1] = True
                    k += 3
                else:
                    table[ord(body[k])] = True
                    k += 1
            i = end + 1
        elif c in _LITERALS:
            table[ord(c)] = True
            i += 1
        else:
            return None
        lo, hi = 1, 1
        q = core[i:i + 1]
        if q in ("?", "+", "*"):
            lo, hi = {"?": (0, 1), "+": (1, None), "*": (0, None)}[q]  # type: ignore[assignment]
            i += 1
        elif q == "{":
            end = core.find("}", i)
            parts = core[i + 1:end].split(",") if end > 0 else []
            if not 1 <= len(parts) <= 2 or not parts[0].isdigit() or (len(parts) == 2 and parts[1] not in ("",)
                                                                      and not parts[1].isdigit()):
                return None
            lo = int(parts[0])
            hi = lo if len(parts) == 1 else (None if parts[1] == "" else int(parts[1]))  # type: ignore[assignment]
            if hi is not None and hi < lo:
                return None
            i = end + 1
        if core[i:i + 1] in ("?", "+", "*", "{"):  # lazy or stacked quantifiers
            return None
        if atoms and atoms[-1][1] != atoms[-1][2]:
            return None
        atoms.append((table, lo, hi))
    return atoms or None


_TAIL_MAX = 64  # longest variable part checked byte by byte


def _byte_match(text: pa.Array, atoms: list[_Atom]) -> np.ndarray | None:
    """Rows of ``text`` (no nulls) fully matching ``atoms``.  Each row's first bytes are copied into one
    row of a matrix in one gather (rows of a window over the bytes), then each position's bytes are
    tested against its atom's byte ranges (comparisons of bytes, cheaper than a table lookup, which
    would widen every byte to an index)."""
    offsets, data = _layout(text)
    starts = offsets[:-1] - offsets[0]
    lengths = np.diff(offsets)
    fixed = sum(lo for _, lo, hi in atoms if lo == hi)
    last_table, last_lo, last_hi = atoms[-1]
    variable = last_lo != last_hi
    longest = int(lengths.max()) if len(lengths) else 0
    if variable and longest - fixed > _TAIL_MAX:
        return None
    if variable:
        ok = lengths >= fixed + last_lo
        if last_hi is not None:
            ok &= lengths <= fixed + last_hi
    else:
        ok = lengths == fixed
    width = longest if variable else fixed
    if not data.size or not width:
        return ok
    padded = np.concatenate([data, np.zeros(width, dtype=np.uint8)])
    window = np.lib.stride_tricks.as_strided(padded, shape=(data.size + 1, width), strides=(1, 1), writeable=False)
    # row i: its bytes, then the next rows' (or zeros): never looked at, as lengths decide there
    rows = window[starts]
    hit = np.empty(len(starts), dtype=bool)
    part = np.empty(len(starts), dtype=bool)
    shifted = np.empty(len(starts), dtype=np.uint8)
    positions = [table for table, lo, _ in (atoms[:-1] if variable else atoms) for _ in range(lo)]
    for p in range(width):
        table = positions[p] if p < len(positions) else last_table
        hit.fill(False)
        for a, b in _byte_ranges(table):
            np.subtract(rows[:, p], a, out=shifted)  # wraps below a: one comparison tests a <= byte <= b
            hit |= np.less_equal(shifted, b - a, out=part)
        if p >= len(positions):
            hit |= lengths <= p  # past the row's end
        ok &= hit
    return ok


def _byte_ranges(table: np.ndarray) -> list[tuple[int, int]]:
    """The runs of bytes a 256-entry table takes, as (first, last) pairs."""
    edges = np.flatnonzero(np.diff(np.concatenate([[False], table, [False]]).astype(np.int8)))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _fullmatch(text: np.ndarray | pa.Array, pattern: str) -> np.ndarray:
    if isinstance(text, pa.Array):
        core = pattern.removeprefix('^').removesuffix('$')
        atoms = _byte_pattern(core) if not text.null_count else None
        if atoms is not None and (matched := _byte_match(text, atoms)) is not None:
            return matched
        anchored = f"^(?:{core})$"
        return pc.match_substring_regex(text, anchored).to_numpy(zero_copy_only=False)
    rx = re.compile(pattern)
    return np.fromiter((rx.fullmatch(s) is not None for s in text), dtype=bool, count=len(text))


_PARALLEL_MIN_ROWS = 1 << 13  # from this many rows, number columns are parsed on the pool
_NUMBER_TYPES = ("integer", "decimal", "code")
_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _pool() -> ThreadPoolExecutor:
    """This process's parsing threads (a forked worker starts its own: the parent's are not in it)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=min(os.cpu_count() or 2, 4),
                                                 thread_name_prefix="quality-numbers"))
    return _POOL[1]


def _parse_ahead(raw: pd.DataFrame | Mapping[str, Sequence[object]], fields: Sequence[FieldLike],
                 columns: Container[str]) -> dict[str, Future[tuple[np.ndarray | pa.Array, np.ndarray, np.ndarray]]]:
    """The number fields given as text, each parsed (``_parsed_numbers``) on the pool, by name.  Arrow's
    cast and numpy's passes over large arrays let go of the GIL, so columns are parsed side by side
    and while the field loop checks others; the loop takes each result in field order, so the
    findings and values are those of parsing one column after another."""
    names = list(dict.fromkeys(f.name for f in fields if f.type in _NUMBER_TYPES and f.name in columns
                               and not _is_numeric(raw[f.name])))
    if len(names) < 2:
        return {}
    pool = _pool()
    return {name: pool.submit(_parsed_numbers, raw[name]) for name in names}


def _parsed_numbers(column: Any) -> tuple[np.ndarray | pa.Array, np.ndarray, np.ndarray]:
    """A number column's stripped text, its empty rows and its values: what the field loop works out."""
    s = _strings(column)
    empty = _blank(s) if isinstance(s, pa.Array) else s == ""
    return s, empty, _numbers(s, empty)


def validate_frame(raw: pd.DataFrame | Mapping[str, Sequence[object]], fields: Sequence[FieldLike], *,
                   rules: RuleSet | None = None, tol_abs: float = 0.01, tol_rel: float = 1e-6,
                   now: datetime | None = None, reference: Any = None,
                   small_groups: Callable[[], Any] | None = None) -> ValidationResult:
    """Type every field present in ``raw`` (a frame, or a mapping of columns: cheaper for the few
    rows of a device submission; strings, '' for empty) by its contract type, then apply the
    active rules.  Which checks run, their severity, parameters and messages are the rules' (data).

    Small inputs (up to ``SMALL_MAX_ROWS`` rows: API submissions and predictions) take the same
    steps with their fixed costs cut: the per-field rule lookups are compiled once per rule set,
    all numeric text columns are checked together as one matrix, findings are kept as plain text
    and the typed frame is built from two blocks instead of one pandas column per field.

    ``reference`` (``quality.reference.Reference``): the robust z-scores use its stored groups'
    medians and MADs instead of the input's own (for a device's few rows).  ``small_groups``: where
    to get one for the groups of the input too small for statistics of their own (fewer than the
    rule's ``min_group`` values: a partner's file of five rows), asked only when there is such a group."""
    if rules is None:
        from .rules import active_rules

        rules = active_rules()
    columns = raw.columns if isinstance(raw, pd.DataFrame) else raw.keys()
    n = len(raw) if isinstance(raw, pd.DataFrame) else len(next(iter(raw.values()), []))
    index = raw.index if isinstance(raw, pd.DataFrame) else pd.RangeIndex(n)
    small = n <= SMALL_MAX_ROWS
    plan = _plan(rules, fields) if small else None
    out = _SmallCollector() if small else _Collector()
    typed: dict[str, np.ndarray] = {}
    scratch = None if small else _Scratch(n)
    texts: dict[str, _Text] = {}
    shared: dict[str, pd.Series] = {}
    batch: _NumberBatch | None = None
    parsed: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # datetime fields' typed values, and as naive UTC
    if plan is not None:
        batched = [f.name for f in fields if f.name in plan.numbers.pos and f.name in columns
                   and not _is_numeric(raw[f.name])]
        if batched:
            batch = _number_batch(plan.numbers, batched, [raw[name] for name in batched], n)
    ahead = _parse_ahead(raw, fields, columns) if n >= _PARALLEL_MIN_ROWS else {}
    try:
        for f in fields:
            kinds = plan.kinds[f.name] if plan is not None else {r.kind: r for r in rules.by_field.get(f.name, ())}
            if f.name not in columns:
                if (r := kinds.get("required")) is not None:
                    out.add(np.ones(n, dtype=bool), f.name, "required", r.severity, np.full(n, "", dtype=object),
                            f"{r.message} (column missing)")
                continue
            if batch is not None and f.name in batch.position:
                p = batch.position[f.name]
                for kind, idx in batch.hits.get(p, ()):
                    r = kinds[_NUMBER_KINDS[kind]]
                    out.add_rows(idx, f.name, r.kind, r.severity, batch.text[p], r.message)
                typed[f.name] = batch.values[p]
                continue
            column = raw[f.name]
            if f.type in ("integer", "decimal", "code") and _is_numeric(column):
                # Already typed (stored values, Parquet): no text to parse, only the rules to apply.
                values = np.asarray(column, dtype="float64")
                typed[f.name] = checked = _number_rules(f, kinds, values, None, values, out, scratch)
                if checked is values and (values is column or not values.flags.writeable):  # unchanged, not ours
                    if isinstance(column, pd.Series):
                        shared[f.name] = column  # the frame shares it: pandas copies on write
                    else:
                        typed[f.name] = values.copy()
                continue
            if n >= ARROW_MIN_ROWS and f.type in ("text", "uuid", "multiselect"):
                texts[f.name] = text = _Text(column)
                _text_rules(f, kinds, text, out)
                if text.unchanged and isinstance(raw, pd.DataFrame) and isinstance(column, pd.Series):
                    shared[f.name] = column  # the frame shares it: pandas copies on write
                    typed[f.name] = column.to_numpy()
                else:
                    typed[f.name] = text.objects()
                continue
            numbers: np.ndarray | None = None
            if (job := ahead.pop(f.name, None)) is not None:
                s, empty, numbers = job.result()  # parsed on the pool while earlier fields were checked
            else:
                s = _strings(column)
                empty = _blank(s) if isinstance(s, pa.Array) else s == ""
            present = ~empty
            if (r := kinds.get("required")) is not None:
                out.add(empty, f.name, "required", r.severity, s, r.message)
            if f.type in ("text", "uuid"):
                if (r := kinds.get("pattern")) is not None:
                    out.add(present & ~_fullmatch(s, r.params["regex"]), f.name, "pattern", r.severity, s, r.message)
                s = _as_objects(s)
                typed[f.name] = _blank_to_none(s, empty)
                if (r := kinds.get("unknown_value")) is not None:
                    if plan is not None:  # set membership: what np.isin decides for str objects, without its sorting
                        known_set = plan.known[f.name]
                        known = np.fromiter((v in known_set for v in s), dtype=bool, count=len(s))
                    else:
                        known = np.isin(s, np.array([str(a) for a in r.params["values"]], dtype=object))
                    out.add(present & ~known, f.name, "unknown_value", r.severity, s, r.message)
                continue
            if f.type == "datetime":
                s = _as_objects(s)
                if small and (instants := _iso_instants(s, empty)) is not None:  # every value plain ISO with an offset
                    typed[f.name] = instants[0]
                    parsed[f.name] = instants
                    continue
                if small:  # the same parse without a Series around it ('' -> None rather than NaN: both NaT)
                    stamps = pd.to_datetime(_blank_to_none(s, empty), errors="coerce", utc=True, format="ISO8601")
                else:
                    stamps = pd.to_datetime(pd.Series(s).where(present), errors="coerce", utc=True, format="ISO8601")
                naive = np.array([bool(v) and not _has_offset(v) for v in s], dtype=bool)
                bad = present & (np.asarray(stamps.isna()) | naive)
                if (r := kinds.get("type")) is not None:
                    out.add(bad, f.name, "type", r.severity, s, r.message)
                kept = stamps.where(~bad)
                typed[f.name] = kept.to_numpy()
                if small:
                    parsed[f.name] = (typed[f.name], kept.tz_localize(None).to_numpy())
                continue
            if f.type == "multiselect":
                if (r := kinds.get("allowed")) is not None:
                    allowed = plan.codes[f.name] if plan is not None else _codes_allowed(r)
                    out.add(_bad_codes(s, present, allowed), f.name, "allowed", r.severity, s, r.message)
                s = _as_objects(s)
                typed[f.name] = _blank_to_none(s, empty)
                continue
            if f.type == "boolean":
                s = _as_objects(s)
                lowered = np.array([v.lower() for v in s], dtype=object)
                is_bool = np.isin(lowered, np.array(list(_BOOLEAN), dtype=object))
                if (r := kinds.get("type")) is not None:
                    out.add(present & ~is_bool, f.name, "type", r.severity, s, r.message)
                typed[f.name] = np.array([_BOOLEAN.get(v) for v in lowered], dtype=object)
                continue
            values = numbers if numbers is not None else _numbers(s, empty)
            typed[f.name] = _number_rules(f, kinds, values, present & np.isnan(values), s, out, scratch)
    finally:
        for job in ahead.values():  # left over when a check raised: not worth finishing
            job.cancel()
    _business(typed, rules, out, tol_abs, tol_rel, now or datetime.now(UTC), parsed)
    if reference is not None:
        _statistical_against(typed, rules, out, reference)
    else:
        _statistical(typed, texts, rules, out, small_groups)
    present_fields = set(typed) | set(columns)
    if small and not shared:
        assert isinstance(out, _SmallCollector)
        return ValidationResult(columns=typed, index=index, findings=out,
                                score_columns=_score_columns(out.failing(rules), n, rules, present_fields))
    issues = out.frame()
    # Object columns stay object: letting pandas re-infer them as Arrow strings cost ~20% of a run.
    frame = pd.DataFrame({k: shared[k] if k in shared else
                          (pd.Series(v, index=index, dtype=object, copy=False) if v.dtype == object else v)
                          for k, v in typed.items()}, index=index, copy=False)
    return ValidationResult(typed=frame, issues=issues, scores=_scores(out.failing(rules), n, rules, present_fields))


# --- small inputs --------------------------------------------------------------------------------

SMALL_MAX_ROWS = 256  # at most this many rows: the small-input path (below ARROW_MIN_ROWS: object arrays)
_NUMBER_KINDS = ("required", "type", "sentinel", "allowed", "range", "outlier")  # the order findings take
_PLAN_LIMIT = 32  # distinct field lists remembered per rule set


@dataclass
class _SmallCollector(_Collector):
    """Findings of a small input: each chunk's values as str at once, the frame built from plain lists."""

    texts: list[list[str]] = field(default_factory=list)

    def add_rows(self, idx: np.ndarray, name: str, rule: str, severity: str,
                 text: np.ndarray | pa.Array | _Text | Callable[[np.ndarray], np.ndarray], message: str) -> None:
        if name in WITHHELD_FIELDS:
            text = _withheld
        if isinstance(text, _Text | pa.Array):  # not made for small inputs; as the general collector
            self.rows.append(idx)
            self.meta.append((name, rule, severity, message))
            self.values.append(_value_text(text, idx))
            self.texts.append(self.values[-1].to_pylist())
            return
        picked = text(idx) if callable(text) else np.asarray(text)[idx]
        self.rows.append(idx)
        self.meta.append((name, rule, severity, message))
        # str() of each value with trailing NULs dropped: what numpy's unicode cast gives _value_text
        self.texts.append([str(v).rstrip("\x00") for v in np.asarray(picked).astype(object).tolist()])

    def records(self) -> list[dict[str, Any]]:
        """What ``frame()`` holds, as dicts: row, field, rule, severity, value, message."""
        return [{"row": int(r), "field": m[0], "rule": m[1], "severity": m[2], "value": v, "message": m[3]}
                for rows, m, texts in zip(self.rows, self.meta, self.texts, strict=True)
                for r, v in zip(rows.tolist(), texts, strict=True)]

    def frame(self) -> pd.DataFrame:
        if not self.rows or _ARROW_STRINGS is None:
            self.values = [pa.array(t, type=pa.string()) for t in self.texts]
            return super().frame()
        sizes = [len(r) for r in self.rows]

        def text(items: list[str]) -> pd.Series:
            return _str_series(pa.array(items, type=pa.large_string()))

        def repeated(i: int) -> pd.Series:
            return text([m[i] for m, k in zip(self.meta, sizes, strict=True) for _ in range(k)])

        return pd.DataFrame({
            "row": np.concatenate(self.rows),
            "field": repeated(0), "rule": repeated(1), "severity": repeated(2),
            "value": text([v for chunk in self.texts for v in chunk]),
            "message": repeated(3),
        }, copy=False)


@dataclass
class _NumberPlan:
    """The number rules of every numeric field, as one row of parameters per field (NaN padding)."""

    pos: dict[str, int]
    required: np.ndarray
    has_type: np.ndarray
    whole: np.ndarray  # fractional values are a type error (integers, codes without fractional codes)
    sentinels: np.ndarray  # (fields, most sentinels)
    has_sentinel: np.ndarray
    allowed: np.ndarray  # (fields, most codes)
    has_allowed: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    has_range: np.ndarray
    top: np.ndarray
    has_outlier: np.ndarray


@dataclass
class _Plan:
    kinds: dict[str, dict[str, CompiledRule]]
    numbers: _NumberPlan
    known: dict[str, frozenset[str]]
    codes: dict[str, list[str]]


def _real(v: object) -> bool:
    return isinstance(v, int | float)


def _plan(rules: RuleSet, fields: Sequence[FieldLike]) -> _Plan:
    """The rule lookups of these fields, compiled once per rule set."""
    key = ("small", tuple((f.name, f.type) for f in fields))
    hit = rules.memo.get(key)
    if hit is not None:
        return hit  # type: ignore[no-any-return]
    kinds = {f.name: {r.kind: r for r in rules.by_field.get(f.name, ())} for f in fields}
    known = {name: frozenset(str(a) for a in k["unknown_value"].params["values"])
             for name, k in kinds.items() if "unknown_value" in k}
    codes = {f.name: _codes_allowed(kinds[f.name]["allowed"]) for f in fields
             if f.type == "multiselect" and "allowed" in kinds[f.name]}
    rows: list[tuple[str, list[float], list[float], float, float, float, dict[str, bool]]] = []
    for f in fields:
        k = kinds[f.name]
        if f.type not in ("integer", "decimal", "code") or any(x[0] == f.name for x in rows):
            continue
        sentinel = k["sentinel"].params["values"] if "sentinel" in k else []
        allowed = k["allowed"].params["values"] if "allowed" in k else []
        rng = k["range"].params if "range" in k else {}
        lo, hi = rng.get("min"), rng.get("max")
        top = k["outlier"].params["max"] if "outlier" in k else np.nan
        if not all(_real(v) for v in [*sentinel, *allowed, top, *(b for b in (lo, hi) if b is not None)]):
            continue  # unusual parameters: this field takes the general path, which decides as it always has
        fractional = any(isinstance(a, float) and not a.is_integer() for a in allowed)
        lo_f = -np.inf if lo is None else float(lo)
        hi_f = np.inf if hi is None else float(hi)
        rows.append((f.name, [float(v) for v in sentinel], [float(a) for a in allowed], lo_f, hi_f, float(top), {
            "required": "required" in k, "type": "type" in k,
            "whole": f.type == "integer" or (f.type == "code" and not fractional),
            "sentinel": "sentinel" in k, "allowed": "allowed" in k,
            "range": "range" in k and (lo_f > -np.inf or hi_f < np.inf), "outlier": "outlier" in k}))

    def padded(i: int) -> np.ndarray:
        width = max((len(r[i]) for r in rows), default=0)  # type: ignore[arg-type]
        out = np.full((len(rows), width), np.nan)
        for j, r in enumerate(rows):
            out[j, :len(r[i])] = r[i]  # type: ignore[arg-type]
        return out

    def flag(name: str) -> np.ndarray:
        return np.array([r[6][name] for r in rows], dtype=bool)

    numbers = _NumberPlan(
        pos={r[0]: j for j, r in enumerate(rows)}, required=flag("required"), has_type=flag("type"),
        whole=flag("whole"), sentinels=padded(1), has_sentinel=flag("sentinel"), allowed=padded(2),
        has_allowed=flag("allowed"), lo=np.array([r[3] for r in rows], dtype=float),
        hi=np.array([r[4] for r in rows], dtype=float), has_range=flag("range"),
        top=np.array([r[5] for r in rows], dtype=float), has_outlier=flag("outlier"))
    plan = _Plan(kinds=kinds, numbers=numbers, known=known, codes=codes)
    if len(rules.memo) > _PLAN_LIMIT:
        rules.memo.clear()
    rules.memo[key] = plan
    return plan


@dataclass
class _NumberBatch:
    position: dict[str, int]
    values: np.ndarray  # (fields, rows) typed values
    text: np.ndarray  # (fields, rows) stripped text
    hits: dict[int, list[tuple[int, np.ndarray]]]  # field -> (kind in _NUMBER_KINDS, failing rows), in order


_PARSED: dict[str, float] = {}  # text -> its number (NaN: not one); common answers repeat


def _parse(s: str) -> float:
    v = float(s) if _NUMBER_RE.match(s) else np.nan
    if v in (np.inf, -np.inf):  # too large for a float: not data, as for any input
        v = np.nan
    if len(_PARSED) > 100_000:
        _PARSED.clear()
    _PARSED[s] = v
    return v


def _number_batch(plan: _NumberPlan, names: list[str], columns: list[Any], n: int) -> _NumberBatch:
    """``_numbers`` and ``_number_rules`` of text columns, for all numeric fields at once: the same
    operations in the same order, on a (fields, rows) matrix."""
    sel = np.array([plan.pos[name] for name in names], dtype=np.intp)
    # _strings of each column (few rows: no Arrow), all columns in one list
    items = [v for c in columns for v in (c.tolist() if isinstance(c, pd.Series | np.ndarray) else c)]
    flat = [v.strip() if type(v) is str else
            "" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v).strip() for v in items]
    text = np.array(flat, dtype=object).reshape(len(names), n)
    parsed = _PARSED
    values = np.array([parsed[s] if s in parsed else _parse(s) for s in flat], dtype="float64").reshape(text.shape)
    empty = np.array([s == "" for s in flat], dtype=bool).reshape(text.shape)
    nan = np.isnan(values)
    bad_type = ~empty & nan
    with np.errstate(invalid="ignore"):
        whole = np.rint(values)
        np.subtract(values, whole, out=whole)
    bad_type |= (whole != 0) & ~nan & plan.whole[sel, None]
    values[bad_type] = np.nan
    nan |= bad_type
    checked = ~nan
    with np.errstate(invalid="ignore"):
        sentinel = checked & (values[:, :, None] == plan.sentinels[sel, None, :]).any(axis=2) & plan.has_sentinel[sel, None]
        checked &= ~sentinel
        allowed = checked & ~(values[:, :, None] == plan.allowed[sel, None, :]).any(axis=2) & plan.has_allowed[sel, None]
        rng = checked & ((values < plan.lo[sel, None]) | (values > plan.hi[sel, None])) & plan.has_range[sel, None]
        checked &= ~rng
        outlier = checked & (values > plan.top[sel, None]) & plan.has_outlier[sel, None]
    masks = np.stack([empty & plan.required[sel, None], bad_type & plan.has_type[sel, None], sentinel, allowed, rng,
                      outlier], axis=1)
    fi, ki, ri = np.nonzero(masks)  # (field, kind, row): the general path's order
    hits: dict[int, list[tuple[int, np.ndarray]]] = {}
    if fi.size:
        keys = fi * len(_NUMBER_KINDS) + ki
        cuts = (np.flatnonzero(np.diff(keys)) + 1).tolist()
        for a, b in zip([0, *cuts], [*cuts, len(keys)], strict=True):
            hits.setdefault(int(fi[a]), []).append((int(ki[a]), ri[a:b]))
    return _NumberBatch(position={name: j for j, name in enumerate(names)}, values=values, text=text, hits=hits)


def _small_frame(typed: dict[str, np.ndarray], index: pd.Index) -> pd.DataFrame:
    """The typed frame from one float block and one object block (what the column-per-field
    construction holds, without its per-column cost)."""
    names = list(typed)
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(typed.values()):
        groups.setdefault(v.dtype.str if v.dtype != object else "O", []).append(i)
    if not names or any(typed[names[i[0]]].dtype not in (np.dtype("float64"), np.dtype(object)) for i in groups.values()):
        return pd.DataFrame({k: pd.Series(v, index=index, dtype=object, copy=False) if v.dtype == object else v
                             for k, v in typed.items()}, index=index, copy=False)
    n = len(index)
    blocks = []
    for where in groups.values():
        dtype = typed[names[where[0]]].dtype
        block = np.empty((len(where), n), dtype=dtype)
        for j, i in enumerate(where):
            block[j] = typed[names[i]]
        blocks.append((block, np.array(where, dtype=np.intp)))
    return create_dataframe_from_blocks(blocks, index=index, columns=pd.Index(names))


def _codes_allowed(r: CompiledRule) -> list[str]:
    return sorted({_fmt(float(a)) for a in r.params["values"]} | {str(a) for a in r.params["values"]})


def _text_rules(f: FieldLike, kinds: dict[str, CompiledRule], text: _Text, out: _Collector) -> None:
    """Text, uuid and code-list columns of a large input: each check once per distinct value when coded."""
    present = ~text.empty
    if (r := kinds.get("required")) is not None:
        out.add(text.empty, f.name, "required", r.severity, text, r.message)
    if f.type in ("text", "uuid") and (r := kinds.get("pattern")) is not None:
        out.add(present & ~text.rows(_fullmatch(text.values, r.params["regex"])), f.name, "pattern", r.severity,
                text, r.message)
    if f.type == "multiselect" and (r := kinds.get("allowed")) is not None:
        every = np.ones(len(text.values), dtype=bool)
        out.add(text.rows(_bad_codes(text.values, every, _codes_allowed(r))) & present, f.name, "allowed",
                r.severity, text, r.message)
    if f.type in ("text", "uuid") and (r := kinds.get("unknown_value")) is not None:
        known = pc.is_in(text.values, value_set=pa.array([str(a) for a in r.params["values"]], type=text.values.type))
        out.add(present & ~text.rows(known.to_numpy(zero_copy_only=False)), f.name, "unknown_value",
                r.severity, text, r.message)


def _bad_codes(s: np.ndarray | pa.Array, present: np.ndarray, allowed: list[str]) -> np.ndarray:
    """Rows whose space-separated codes include one not allowed."""
    bad = np.zeros(len(present), dtype=bool)
    if isinstance(s, pa.Array):
        tokens = pc.split_pattern_regex(s, r"\s+")
        flat = pc.list_flatten(tokens)
        owner = pc.list_parent_indices(tokens).to_numpy()
        wrong = ~pc.is_in(flat, value_set=pa.array(allowed)).to_numpy(zero_copy_only=False)
        wrong &= pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
        bad[np.unique(owner[wrong])] = True
        return bad & present
    allowed_set = set(allowed)
    rows = np.flatnonzero(present)  # few rows carry an answer: check only those
    if rows.size:
        bad[rows] = [any(tok not in allowed_set for tok in v.split()) for v in s[rows]]
    return bad


def _is_numeric(column: object) -> bool:
    dtype = getattr(column, "dtype", None)
    return dtype is not None and pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _number_rules(f: FieldLike, kinds: dict[str, CompiledRule], values: np.ndarray, bad_type: np.ndarray | None,
                  s: np.ndarray | pa.Array, out: _Collector, scratch: _Scratch | None = None) -> np.ndarray:
    """The number checks of one column; returns the typed values (NaN where missing or not a number):
    ``values`` itself when no row was set to NaN.

    Each pass over a million floats costs about as much as the next, so the column is read as few
    times as the checks allow.  Its smallest and largest number (two reductions) tell which rules
    cannot fail anywhere: those are skipped.  A column of a few codes is instead compared with each
    code once: the rows holding none of them (and no NaN) are few, and decide the type and allowed
    findings and the bounds by themselves.  Findings are few, so the rules that run take their
    failing rows as indices: a row flagged by an earlier rule (sentinel, range) is dropped from the
    later ones' indices, and comparisons with NaN are False, so missing rows need no mask either.
    The findings are those of one mask per rule over every row, as before."""
    sc = scratch if scratch is not None and scratch.n == len(values) else _Scratch(len(values))
    allowed_values = kinds["allowed"].params["values"] if "allowed" in kinds else []
    codes = np.asarray([float(a) for a in allowed_values]) if "allowed" in kinds else None
    # Fractions (and infinities) are type errors for integers, and for codes unless a code is a fraction.
    fractional_codes = any(isinstance(a, float) and not a.is_integer() for a in allowed_values)
    whole_only = f.type == "integer" or (f.type == "code" and not fractional_codes)
    span = _whole_span(tuple(codes.tolist())) if whole_only and codes is not None else None
    unknown: np.ndarray | None = None  # with a few codes: the whole numbers that are not one of them
    if span is not None and span[1] - span[0] < _FEW_CODES:
        odd = _neither_code_nor_missing(values, span, sc)  # few rows: looked at one by one below
        x = values[odd]
        with np.errstate(invalid="ignore"):
            fractional = x - np.rint(x) != 0  # as in _fractions
        unknown = odd[~fractional]
        low = min(span[0], float(x.min())) if x.size else span[0]  # x holds no NaN
        high = max(span[1], float(x.max())) if x.size else span[1]
        if fractional.any():
            rows = np.zeros(len(values), dtype=bool)
            rows[odd[fractional]] = True
            bad_type = rows if bad_type is None else bad_type | rows
    else:
        limits = kinds["range"].params if "range" in kinds else {}
        both = whole_only or "sentinel" in kinds or codes is not None  # else only what range and outlier use
        low, high = _bounds(values, low=both or limits.get("min") is not None,
                            high=both or limits.get("max") is not None or "outlier" in kinds)
        if whole_only and (fraction := _fractions(values, low, high, sc)) is not None:
            bad_type = fraction if bad_type is None else bad_type | fraction
    if bad_type is not None and (r := kinds.get("type")) is not None:
        out.add(bad_type, f.name, "type", r.severity, s, r.message)
    if bad_type is not None and bad_type.any():  # the bounds stay those of a superset: still safe to skip by
        if values.flags.writeable and values is not s:  # this call's own array (parsed from text)
            values[bad_type] = np.nan
        else:
            values = np.where(bad_type, np.nan, values)
    mask, part = sc.bools(3), sc.bools(4)
    flagged = np.zeros(0, dtype=np.intp)  # rows a sentinel or range finding took: later rules skip them
    if (r := kinds.get("sentinel")) is not None:
        wanted = np.asarray(r.params["values"], dtype=float)
        if ((low <= wanted) & (wanted <= high)).any():
            flagged = np.flatnonzero(_among(values, wanted, mask, part))
            _add_rows(out, flagged, f.name, r, s)
    if (r := kinds.get("allowed")) is not None and codes is not None:
        if unknown is not None:
            _add_rows(out, _without(unknown, flagged), f.name, r, s)
        elif span is not None:  # whole numbers only, and the codes are every whole number from lo to hi
            if not (span[0] <= low and high <= span[1]):
                bad = np.less(values, span[0], out=mask)
                bad |= np.greater(values, span[1], out=part)
                _add_rows(out, _without(np.flatnonzero(bad), flagged), f.name, r, s)
        else:
            known = _among(values, codes, mask, part)
            known |= np.isnan(values, out=part)
            _add_rows(out, _without(np.flatnonzero(~known), flagged), f.name, r, s)
    if (r := kinds.get("range")) is not None:
        lo = -np.inf if r.params.get("min") is None else r.params["min"]
        hi = np.inf if r.params.get("max") is None else r.params["max"]
        outside: np.ndarray | None = None
        if lo > -np.inf and not low >= lo:
            outside = np.less(values, lo, out=mask)
        if hi < np.inf and not high <= hi:
            if outside is None:
                outside = np.greater(values, hi, out=mask)
            else:
                outside |= np.greater(values, hi, out=part)
        if outside is not None:
            rng = _without(np.flatnonzero(outside), flagged)
            _add_rows(out, rng, f.name, r, s)
            flagged = np.union1d(flagged, rng)
    if (r := kinds.get("outlier")) is not None and not high <= r.params["max"]:
        top = np.greater(values, r.params["max"], out=mask)
        _add_rows(out, _without(np.flatnonzero(top), flagged), f.name, r, s)
    return values


_FEW_CODES = 3  # code lists this short are counted code by code (one pass each) rather than bounded


def _add_rows(out: _Collector, idx: np.ndarray, name: str, r: CompiledRule, s: np.ndarray | pa.Array) -> None:
    if idx.size:
        out.add_rows(idx, name, r.kind, r.severity, s, r.message)


def _without(idx: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """``idx`` (ascending) less the rows in ``taken``."""
    return idx[~np.isin(idx, taken)] if taken.size and idx.size else idx


def _bounds(values: np.ndarray, low: bool = True, high: bool = True) -> tuple[float, float]:
    """The smallest and largest number of ``values``, NaN skipped (NaN when there is none, or when not
    asked for): every test against them is written so that NaN means "cannot tell", never "cannot fail"."""
    if not values.size:
        return np.nan, np.nan
    with np.errstate(invalid="ignore"):
        return (float(np.fmin.reduce(values)) if low else np.nan, float(np.fmax.reduce(values)) if high else np.nan)


@functools.lru_cache(maxsize=1024)  # per rule: small inputs check one row against the same codes again and again
def _whole_span(values: tuple[float, ...]) -> tuple[float, float] | None:
    """(lo, hi) when the whole numbers among the codes are exactly lo, lo + 1, ..., hi (then a whole
    number is allowed if and only if it lies between them)."""
    codes = np.array(values, dtype=np.float64)
    whole = np.unique(codes[np.isfinite(codes) & (codes == np.rint(codes))])
    if not whole.size or not np.array_equal(whole, np.arange(whole[0], whole[-1] + 1)):
        return None
    return float(whole[0]), float(whole[-1])


def _neither_code_nor_missing(values: np.ndarray, span: tuple[float, float], sc: _Scratch) -> np.ndarray:
    """The rows holding neither NaN nor one of the whole numbers from span[0] to span[1]: one pass per code."""
    known = np.isnan(values, out=sc.bools(0))
    for code in np.arange(span[0], span[1] + 1).tolist():
        known |= np.equal(values, code, out=sc.bools(1))
    return np.flatnonzero(~known)


def _fractions(values: np.ndarray, low: float, high: float, sc: _Scratch) -> np.ndarray | None:
    """Rows holding a number that is not whole (a fraction or an infinity); None when there is none."""
    whole = np.rint(values, out=sc.floats(0))
    differs = np.not_equal(whole, values, out=sc.bools(1))  # fractions and NaN (but not +-inf)
    nan = np.isnan(values, out=sc.bools(0))
    if np.isfinite(low) and np.isfinite(high) and np.count_nonzero(differs) == np.count_nonzero(nan):
        return None
    # x - rint(x) is 0 exactly for whole numbers, NaN for +-inf and NaN: as x % 1 != 0, cheaper.
    with np.errstate(invalid="ignore"):
        np.subtract(values, whole, out=whole)
    fraction = np.not_equal(whole, 0, out=differs)
    np.greater(fraction, nan, out=fraction)  # & ~nan
    return fraction


def _among(values: np.ndarray, wanted: np.ndarray, out: np.ndarray, part: np.ndarray) -> np.ndarray:
    """``np.isin(values, wanted)`` for a few float values (equality, as isin decides), into ``out``."""
    if wanted.size > 64:
        out[:] = np.isin(values, wanted)
        return out
    out.fill(False)
    for w in wanted.tolist():
        out |= np.equal(values, w, out=part)
    return out


class _Scratch:
    """Buffers of one validation's length, reused from column to column (fresh memory is slow)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._bools: dict[int, np.ndarray] = {}
        self._floats: dict[int, np.ndarray] = {}

    def bools(self, i: int) -> np.ndarray:
        if i not in self._bools:
            self._bools[i] = np.empty(self.n, dtype=bool)
        return self._bools[i]

    def floats(self, i: int) -> np.ndarray:
        if i not in self._floats:
            self._floats[i] = np.empty(self.n, dtype=np.float64)
        return self._floats[i]


_ISO_INSTANT = re.compile(r"(?:19|20)\d\d-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)")
_UTC_TZ = pd.to_datetime(["2020-01-01T00:00:00Z"], utc=True).tz


def _iso_instants(s: np.ndarray, empty: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A small input's date-times when each is a plain ISO 8601 instant with an offset (what devices
    send): the Timestamps ``pd.to_datetime(..., utc=True, format="ISO8601")`` gives, and the same
    instants as naive UTC datetime64, by ``datetime.fromisoformat``.  None when any value has another
    form: the caller then parses the column with pandas, which also judges it."""
    typed = np.empty(len(s), dtype=object)
    naive = np.empty(len(s), dtype="datetime64[us]")
    for i, (text, blank) in enumerate(zip(s.tolist(), empty.tolist(), strict=True)):
        if blank:
            typed[i], naive[i] = pd.NaT, np.datetime64("NaT")
            continue
        if not _ISO_INSTANT.fullmatch(text):
            return None
        try:
            stamp = pd.Timestamp(datetime.fromisoformat(text)).tz_convert(_UTC_TZ)
        except ValueError:  # e.g. a 30th of February: pandas decides
            return None
        typed[i], naive[i] = stamp, stamp.tz_localize(None).to_datetime64()
    return typed, naive


def _has_offset(text: str) -> bool:
    return text.endswith(("Z", "z")) or bool(re.search(r"[+-]\d\d:?\d\d$", text))


def _business(typed: dict[str, np.ndarray], rules: RuleSet, out: _Collector, tol_abs: float, tol_rel: float,
              now: datetime, parsed: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
    n = len(next(iter(typed.values()))) if typed else 0
    sc = _Scratch(n)  # the identities' temporaries, reused from rule to rule

    def check(r: CompiledRule, actual: np.ndarray, expected: np.ndarray) -> None:
        # |actual - expected| > tol_abs + tol_rel * |actual|, in place (same operations, same order)
        with np.errstate(invalid="ignore"):
            np.subtract(actual, expected, out=expected)
            np.abs(expected, out=expected)
            if not tol_rel >= 0:
                limit = np.abs(actual, out=sc.floats(1))
                np.multiply(limit, tol_rel, out=limit)
                np.add(limit, tol_abs, out=limit)
                out.add(np.greater(expected, limit, out=sc.bools(0)), r.field, r.kind, r.severity, actual, r.message)
                return
            # The limit is never below tol_abs (or is NaN): only the rows above it can fail, and they
            # are few, so the limit is worked out for them alone (the same operations on each).
            rows = np.flatnonzero(np.greater(expected, tol_abs, out=sc.bools(0)))
            limit = np.abs(actual[rows])
            np.multiply(limit, tol_rel, out=limit)
            np.add(limit, tol_abs, out=limit)
            rows = rows[expected[rows] > limit]
        if rows.size:
            out.add_rows(rows, r.field, r.kind, r.severity, actual, r.message)

    for r in rules.by_kind.get("sum_identity", ()):
        terms = r.params["terms"]
        if r.field in typed and all(t in typed for _, t in terms):
            actual = typed[r.field]
            gaps = r.params.get("when_missing")
            if gaps:  # checked only where one of these is blank (where the usual chain cannot vouch)
                blank = np.zeros(n, dtype=bool)
                for g in gaps:
                    if g in typed:
                        blank |= np.isnan(np.asarray(typed[g], dtype="float64"))
                    else:
                        blank[:] = True
                if not blank.any():
                    continue
                actual = np.where(blank, actual, np.nan)
            expected = sc.floats(2)
            expected.fill(0.0)
            for sign, t in terms:  # 0 + x, then + or - each term: sign * x exactly as before
                if sign == 1:
                    np.add(expected, typed[t], out=expected)
                elif sign == -1:
                    np.subtract(expected, typed[t], out=expected)
                else:
                    np.add(expected, sign * typed[t], out=expected)
            check(r, actual, expected)
    for r in rules.by_kind.get("per_day_identity", ()):
        if r.field in typed and r.params["annual"] in typed:
            check(r, typed[r.field], np.divide(typed[r.params["annual"]], 365.0, out=sc.floats(2)))
    for r in rules.by_kind.get("currency_identity", ()):
        if r.field in typed and r.params["ugx"] in typed:
            check(r, typed[r.field], np.divide(typed[r.params["ugx"]], r.params["rate"], out=sc.floats(2)))
    for r in rules.by_kind.get("gps_in_uganda", ()):
        if "gps_lat" in typed and "gps_lon" in typed:
            lat, lon = typed["gps_lat"].astype(float), typed["gps_lon"].astype(float)
            p = r.params
            with np.errstate(invalid="ignore"):
                outside = ~np.isnan(lat) & ~np.isnan(lon) & (
                    (lat < p["lat_min"]) | (lat > p["lat_max"]) | (lon < p["lon_min"]) | (lon > p["lon_max"]))

            def point(idx: np.ndarray, lat: np.ndarray = lat, lon: np.ndarray = lon) -> np.ndarray:
                return np.array([f"{a},{b}" for a, b in zip(lat[idx], lon[idx], strict=True)], dtype=object)

            out.add(outside, r.field, r.kind, r.severity, point, r.message)
    for r in rules.by_kind.get("not_in_future", ()):
        if r.field in typed:
            limit = np.datetime64((now + timedelta(minutes=r.params.get("tolerance_minutes", 0))).replace(tzinfo=None))
            known = (parsed or {}).get(r.field)
            if known is not None and known[0] is typed[r.field]:  # the instants the typed values came from
                stamps = known[1]
            else:
                stamps = pd.to_datetime(typed[r.field], utc=True).tz_localize(None).to_numpy()
            future = ~pd.isna(stamps) & (stamps > limit)
            column = typed[r.field]

            def stamp(idx: np.ndarray, column: np.ndarray = column) -> np.ndarray:
                return column[idx].astype(str).astype(object)

            out.add(future, r.field, r.kind, r.severity, stamp, r.message)


def _statistical(typed: dict[str, np.ndarray], texts: Mapping[str, _Text], rules: RuleSet, out: _Collector,
                 small_groups: Callable[[], Any] | None = None) -> None:
    """Robust z-scores within each district (median and MAD, so the outliers do not hide themselves).
    Rows are sorted by group once per grouping column; each group's median and MAD are then taken
    on a contiguous slice (as pandas' groupby median: NaN skipped, the mean of the middle two).
    A group too small for its own is scored against the stored group (``small_groups``), if any."""
    orders: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    stored: Any = None
    for r in rules.by_kind.get("robust_z", ()):
        by = r.params.get("by", "district")
        if r.field not in typed or by not in typed:
            continue
        if len(typed[r.field]) < r.params.get("min_group", 20) and small_groups is None:
            continue
        if by not in orders:
            orders[by] = _grouping(typed[by], texts.get(by))
        order, bounds = orders[by]
        x = typed[r.field].astype(float, copy=False)  # only read
        xs = x[order]
        far: list[np.ndarray] = []  # the flagged rows, group by group
        min_group, threshold = r.params.get("min_group", 20), r.params.get("threshold", 5.0)
        for g in range(len(bounds) - 1):  # per group, not per row: each group is one contiguous slice
            part = xs[bounds[g]:bounds[g + 1]]
            v = part[~np.isnan(part)]  # a copy: partitioned in place below
            if v.size < min_group:  # also the empty group: NaN median, never flagged
                if v.size and small_groups is not None:
                    stored = small_groups() if stored is None else stored
                    name = str(typed[by][order[bounds[g]]]).strip()
                    med, mad = stored.stats.get((r.field, by), {}).get(name, (np.nan, np.nan))
                    if mad > 0:
                        far.append(order[bounds[g] + _far(part, med, mad, threshold)])
                continue
            med = _median(v)
            np.subtract(v, med, out=v)
            np.abs(v, out=v)
            mad = _median(v)
            if not mad > 0:
                continue
            far.append(order[bounds[g] + _far(part, med, mad, threshold)])
        if far:
            rows = np.sort(np.concatenate(far))
            if rows.size:
                out.add_rows(rows, r.field, r.kind, r.severity, x, r.message)


def _statistical_against(typed: dict[str, np.ndarray], rules: RuleSet, out: _Collector, reference: Any) -> None:
    """Robust z-scores of each row against its group's stored median and MAD (same score, same
    threshold as ``_statistical``; a group with too few stored records flags nothing)."""
    for r in rules.by_kind.get("robust_z", ()):
        by = r.params.get("by", "district")
        stats = reference.stats.get((r.field, by))
        if not stats or r.field not in typed or by not in typed:
            continue
        x = typed[r.field].astype(float, copy=False)
        groups = typed[by]
        med = np.array([stats.get(str(g).strip(), (np.nan, np.nan))[0] if g is not None else np.nan for g in groups])
        mad = np.array([stats.get(str(g).strip(), (np.nan, np.nan))[1] if g is not None else np.nan for g in groups])
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.abs(0.6745 * (x - med) / mad)
        far = np.flatnonzero(z > r.params.get("threshold", 5.0))  # NaN (no value, no group): never
        if far.size:
            out.add_rows(far, r.field, r.kind, r.severity, x, r.message)


def _far(part: np.ndarray, med: float, mad: float, threshold: float) -> np.ndarray:
    """Positions in ``part`` where |0.6745 * (x - med) / mad| > threshold (NaN: never).  That score grows
    with |x - med|, so only the rows beyond threshold * mad / 0.6745 (taken a millionth lower: rounding
    cannot hide a row) can pass; they are few, and the score is worked out for them alone."""
    with np.errstate(invalid="ignore", over="ignore"):
        gap = np.subtract(part, med)
        np.abs(gap, out=gap)
        rows = np.flatnonzero(gap > threshold * mad / 0.6745 * (1 - 1e-6))
        z = 0.6745 * (part[rows] - med) / mad
        np.abs(z, out=z)
        return rows[z > threshold]


def _median(v: np.ndarray) -> float:
    """np.median of a NaN-free array (the mean of the middle two for an even size), reordering ``v``
    in place instead of copying it."""
    k = v.size // 2
    if v.size % 2:
        return _ranked(v, [k])[0]
    low, high = _ranked(v, [k - 1, k])
    return float((np.float64(low) + np.float64(high)) / 2)


_SAMPLE_RANKS = 4096  # sample size that brackets a rank before selecting it


def _ranked(v: np.ndarray, ranks: list[int]) -> list[float]:
    """The values of the given ranks (0 the smallest) in NaN-free ``v``, as ``np.partition`` gives them
    (up to the sign of a zero), reordering ``v`` in place.  Partitioning a large array is slow when it
    holds few distinct values (answers rounded to whole minutes), so while ``v`` is large an evenly
    spaced sample brackets the ranks between two of its values, lo and hi.  Counting then settles
    every rank that falls on a run of lo or of hi, and keeps only the values strictly between them
    for the others.  If a bracket misses (counting tells) or hardly shrinks ``v``, what is left is
    partitioned whole."""
    found: dict[int, float] = {}
    offset = 0  # ranks within v are the wanted ranks less offset
    pending = list(ranks)
    while pending and v.size > 4 * _SAMPLE_RANKS:
        first, last = pending[0] - offset, pending[-1] - offset
        sample = np.sort(v[::v.size // _SAMPLE_RANKS])
        spread = 2 * int(np.sqrt(sample.size))  # about four times a sample rank's usual error
        lo = float(sample[max(first * sample.size // v.size - spread, 0)])
        hi = float(sample[min(last * sample.size // v.size + spread, sample.size - 1)])
        if not (np.count_nonzero(v < lo) <= first and last < np.count_nonzero(v <= hi)):
            break  # the bracket missed
        lo_end, hi_start = int(np.count_nonzero(v <= lo)), int(np.count_nonzero(v < hi))
        for k in pending:
            if k - offset < lo_end:
                found[k] = lo
            elif k - offset >= hi_start:
                found[k] = hi
        pending = [k for k in pending if k not in found]
        if not pending or hi_start - lo_end > v.size // 2:
            break
        inside = np.greater(v, lo)
        inside &= v < hi
        v = v[inside]
        offset += lo_end
    if pending:
        v.partition([k - offset for k in pending])
        found.update((k, float(v[k - offset])) for k in pending)
    return [found[k] for k in ranks]


_FEW_GROUPS = 8  # groups this few are gathered one by one rather than sorted


def _grouping(by: np.ndarray, text: _Text | None) -> tuple[np.ndarray, np.ndarray]:
    """The rows ordered by group (those without one first), and each group's slice bounds in that order."""
    codes = text.groups() if text is not None else None
    if codes is None:
        codes = pd.factorize(by)[0]
    k = int(codes.max()) + 1 if codes.size else 0
    if k <= _FEW_GROUPS:  # (districts) each group's rows, ascending: what the stable sort gives, in k + 1 passes
        parts = [np.flatnonzero(codes == g) for g in range(-1, k)]  # those without a group first
        sizes = np.array([len(p) for p in parts[1:]], dtype=np.int64)
        return np.concatenate(parts), np.concatenate([[0], np.cumsum(sizes)]) + len(parts[0])
    small = codes.astype(np.int16) if k < 2**15 else codes  # stable sort of 16-bit keys is a radix sort
    order = np.argsort(small, kind="stable")
    counts = np.bincount(codes[codes >= 0], minlength=k)
    skipped = int((codes < 0).sum())  # -1 sorts first
    bounds = np.concatenate([[0], np.cumsum(counts)]) + skipped
    return order, bounds


SCORE_LEVELS = {"completeness": "structural", "validity": "semantic", "consistency": "business"}


def quality_scores(issues: pd.DataFrame, n: int, rules: RuleSet, present: set[str]) -> pd.DataFrame:
    """Per row: completeness (required fields present), validity (semantic rules passed),
    consistency (business rules passed), each 0-1, and the weighted overall score."""
    level_of = rules.levels()
    keys = (issues["rule"] + "." + issues["field"]).to_numpy(dtype=object) if len(issues) else np.array([], dtype=object)
    issue_levels = np.array([level_of.get(k, "") for k in keys], dtype=object)
    rows = issues["row"].to_numpy(dtype=np.int64) if len(issues) else np.array([], dtype=np.int64)
    required = issues["rule"].to_numpy(dtype=object) == "required" if len(issues) else np.zeros(0, dtype=bool)
    failing = {name: rows[(issue_levels == level) & required] if name == "completeness" else rows[issue_levels == level]
               for name, level in SCORE_LEVELS.items()}
    return _scores(failing, n, rules, present)


def _scores(failing: Mapping[str, np.ndarray], n: int, rules: RuleSet, present: set[str]) -> pd.DataFrame:
    """The scores from each score's failing rows (one entry per finding)."""
    from django.conf import settings

    weights = settings.RTV_QUALITY_WEIGHTS
    if n > SMALL_MAX_ROWS and weights and set(weights) <= set(SCORE_LEVELS):
        return _large_scores(failing, n, weights, {name: _applicable(name, level, rules, present)
                                                   for name, level in SCORE_LEVELS.items()})
    out = _score_columns(failing, n, rules, present)
    if n <= SMALL_MAX_ROWS:
        return _small_frame(out, pd.RangeIndex(n))
    return pd.DataFrame(out, copy=False)


def _score_columns(failing: Mapping[str, np.ndarray], n: int, rules: RuleSet, present: set[str]) -> dict[str, np.ndarray]:
    """The scores as float64 columns: completeness, validity, consistency, score."""
    from django.conf import settings

    weights = settings.RTV_QUALITY_WEIGHTS
    out: dict[str, np.ndarray] = {}
    for name, level in SCORE_LEVELS.items():
        applicable = _applicable(name, level, rules, present)
        counts = np.bincount(failing[name], minlength=n)[:n] if n else np.zeros(0)
        out[name] = np.clip(1.0 - counts / max(applicable, 1), 0.0, 1.0).astype("float64", copy=False)
    total = sum(weights.values())
    out["score"] = np.asarray(sum(out[k] * w for k, w in weights.items()) / total, dtype="float64").reshape(n)
    return out


def _applicable(name: str, level: str, rules: RuleSet, present: set[str]) -> int:
    if name == "completeness":
        return sum(1 for r in rules.by_kind.get("required", ()) if r.field in present)
    return sum(1 for r in rules.rules if r.level == level and r.field in present)


def _large_scores(failing: Mapping[str, np.ndarray], n: int, weights: Mapping[str, float],
                  applicable: Mapping[str, int]) -> pd.DataFrame:
    """``_scores`` of many rows: the same operations in the same order, written in place into one block
    that becomes the frame (no temporaries, no copy when the frame is built)."""
    names = [*SCORE_LEVELS, "score"]
    block = np.empty((len(names), n), dtype=np.float64)
    out = dict(zip(names, block, strict=True))
    for name in SCORE_LEVELS:
        row = out[name]
        np.divide(np.bincount(failing[name], minlength=n)[:n], max(applicable[name], 1), out=row)
        np.subtract(1.0, row, out=row)
        np.clip(row, 0.0, 1.0, out=row)
    score, term = out["score"], np.empty(n, dtype=np.float64)
    for i, (k, w) in enumerate(weights.items()):  # sum(): 0 + the first term, then + each other term
        if i == 0:
            np.multiply(out[k], w, out=score)
            np.add(score, 0, out=score)
        else:
            score += np.multiply(out[k], w, out=term)
    np.divide(score, sum(weights.values()), out=score)
    return create_dataframe_from_blocks([(block, np.arange(len(names), dtype=np.intp))], index=pd.RangeIndex(n),
                                        columns=pd.Index(names))
