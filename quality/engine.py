"""The validator every door uses: schema rules compiled to vectorised masks.

Input is a frame of raw strings keyed by canonical field name; output is the typed frame and one
row per finding (``row``: 0-based position, ``field``, ``rule``, ``severity``, ``value``,
``message``).  No per-row Python loop over the data: each rule is one numpy mask over a column.
Columns are plain numpy arrays, not pandas Series, so a one-row device submission costs about a
millisecond and a million-row file is parsed by Arrow's C++ kernels.

Rule codes (stable; reports, the generator's sidecar and tests use them):
  errors:   required, type, range, allowed, sum_identity, per_day_identity, currency_identity
  warnings: type (lenient fields), sentinel, outlier, pattern, unknown_value, duplicate_household
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rtv import contract

ISSUE_COLUMNS = ["row", "field", "rule", "severity", "value", "message"]
ARROW_MIN_ROWS = 512  # below this, plain Python on the few strings beats Arrow's call overhead
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_NUMBER_RE = re.compile(_NUMBER)
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


@dataclass
class ValidationResult:
    typed: pd.DataFrame
    issues: pd.DataFrame

    def error_rows(self) -> np.ndarray:
        errs = self.issues.loc[self.issues["severity"] == "error", "row"]
        return np.unique(errs.to_numpy(dtype=np.int64))


@dataclass
class _Collector:
    rows: list[np.ndarray] = field(default_factory=list)
    meta: list[tuple[str, str, str, str]] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)

    def add(self, mask: np.ndarray, name: str, rule: str, severity: str, text: np.ndarray | pa.Array,
            message: str) -> None:
        idx = np.flatnonzero(mask)
        if idx.size:
            self.rows.append(idx)
            self.meta.append((name, rule, severity, message))
            if isinstance(text, pa.Array):
                self.values.append(np.array(text.take(pa.array(idx)).to_pylist(), dtype=object))
            else:
                self.values.append(np.asarray(text, dtype=object)[idx])

    def frame(self) -> pd.DataFrame:
        if not self.rows:
            return pd.DataFrame({c: pd.Series(dtype="int64" if c == "row" else "object") for c in ISSUE_COLUMNS})
        sizes = [len(r) for r in self.rows]
        return pd.DataFrame({
            "row": np.concatenate(self.rows),
            "field": np.repeat([m[0] for m in self.meta], sizes),
            "rule": np.repeat([m[1] for m in self.meta], sizes),
            "severity": np.repeat([m[2] for m in self.meta], sizes),
            "value": np.concatenate(self.values).astype(str),
            "message": np.repeat([m[3] for m in self.meta], sizes),
        })


def _fmt(v: float | int | str | None) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _strings(col: pd.Series | np.ndarray | list[object]) -> np.ndarray | pa.Array:
    """Stripped text ('' for missing): an Arrow array for large inputs, an object array otherwise."""
    if len(col) >= ARROW_MIN_ROWS:
        arr = pa.array(col, type=pa.string(), from_pandas=True)
        if isinstance(arr, pa.ChunkedArray):  # pandas' Arrow-backed strings arrive chunked
            arr = arr.combine_chunks()
        return pc.utf8_trim_whitespace(pc.fill_null(arr, ""))
    items = col.tolist() if isinstance(col, pd.Series | np.ndarray) else col
    return np.array(["" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v).strip()
                     for v in items], dtype=object)


def _numbers(text: np.ndarray | pa.Array) -> np.ndarray:
    """float64 of each string; NaN where empty or not a number (no 'nan', 'inf' or '1,5')."""
    if isinstance(text, pa.Array):
        blank_to_null = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
        try:  # the common case: every value is a plain number, so one C++ cast does it all
            parsed = pc.cast(blank_to_null, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            valid = pc.match_substring_regex(text, _NUMBER)
            parsed = pc.cast(pc.if_else(valid, text, pa.scalar(None, pa.string())), pa.float64())
        values = parsed.to_numpy(zero_copy_only=False).astype("float64", copy=False)
        return np.where(np.isfinite(values), values, np.nan)  # 'nan'/'inf' spelled out are not data
    return np.array([float(s) if _NUMBER_RE.match(s) else np.nan for s in text], dtype="float64")


def _blank_to_none(s: np.ndarray, empty: np.ndarray) -> np.ndarray:
    out = np.array(s, dtype=object, copy=True)
    out[empty] = None
    return out


def _as_objects(text: np.ndarray | pa.Array) -> np.ndarray:
    return text.to_numpy(zero_copy_only=False) if isinstance(text, pa.Array) else text


def _fullmatch(text: np.ndarray | pa.Array, pattern: str) -> np.ndarray:
    if isinstance(text, pa.Array):
        anchored = f"^(?:{pattern.removeprefix('^').removesuffix('$')})$"
        return pc.match_substring_regex(text, anchored).to_numpy(zero_copy_only=False)
    rx = re.compile(pattern)
    return np.fromiter((rx.fullmatch(s) is not None for s in text), dtype=bool, count=len(text))


def validate_frame(raw: pd.DataFrame | Mapping[str, Sequence[object]], fields: Sequence[FieldLike], *,
                   tol_abs: float = 0.01, tol_rel: float = 1e-6) -> ValidationResult:
    """Type and check every field present in ``raw``: a frame, or a mapping of columns (cheaper
    for the few rows of a device submission), of strings ('' for empty)."""
    columns = raw.columns if isinstance(raw, pd.DataFrame) else raw.keys()
    n = len(raw) if isinstance(raw, pd.DataFrame) else len(next(iter(raw.values()), []))
    index = raw.index if isinstance(raw, pd.DataFrame) else pd.RangeIndex(n)
    out = _Collector()
    typed: dict[str, np.ndarray] = {}
    for f in fields:
        if f.name not in columns:
            if f.required:
                out.add(np.ones(n, dtype=bool), f.name, "required", "error", np.full(n, "", dtype=object),
                        f"{f.name} is required (column missing)")
            continue
        s = _strings(raw[f.name])
        empty = pc.equal(s, "").to_numpy(zero_copy_only=False) if isinstance(s, pa.Array) else s == ""
        if f.required:
            out.add(empty, f.name, "required", "error", s, f"{f.name} is required")
        if f.type in ("text", "uuid", "datetime"):
            present = ~empty
            if f.pattern:
                out.add(present & ~_fullmatch(s, f.pattern), f.name, "pattern", "warning", s,
                        f"{f.name} does not match the expected pattern")
            s = _as_objects(s)
            typed[f.name] = _blank_to_none(s, empty)
            if f.allowed:
                known = np.isin(s, np.array([str(a) for a in f.allowed], dtype=object))
                out.add(present & ~known, f.name, "unknown_value", "warning", s, f"{f.name} is not one of the known values")
            continue
        if f.type in ("multiselect", "boolean"):
            s = _as_objects(s)
        if f.type == "multiselect":
            typed[f.name] = _multiselect(s, empty, f, out)
            continue
        if f.type == "boolean":
            lowered = np.array([v.lower() for v in s], dtype=object)
            known = np.isin(lowered, np.array(list(_BOOLEAN), dtype=object))
            out.add(~empty & ~known, f.name, "type", "error", s, f"{f.name} must be true or false")
            typed[f.name] = np.array([_BOOLEAN.get(v) for v in lowered], dtype=object)
            continue
        values = _numbers(s)
        bad_type = ~empty & np.isnan(values)
        if f.type in ("integer", "code"):
            fractional_codes = any(isinstance(a, float) and not a.is_integer() for a in f.allowed)
            if f.type == "integer" or not fractional_codes:
                with np.errstate(invalid="ignore"):
                    bad_type |= ~np.isnan(values) & (np.mod(values, 1) != 0)
        if f.lenient:
            out.add(bad_type, f.name, "type", "warning", s, f"{f.name} is not a number; the value was dropped")
        else:
            out.add(bad_type, f.name, "type", "error", s, f"{f.name} must be a number")
        values = np.where(bad_type, np.nan, values)
        present = ~np.isnan(values)
        if f.sentinels:
            sentinel = present & np.isin(values, np.asarray(f.sentinels, dtype=float))
            out.add(sentinel, f.name, "sentinel", "warning", s, f"{f.name} holds a 'not known' code")
            checked = present & ~sentinel
        else:
            checked = present
        if f.allowed:
            allowed = np.asarray([float(a) for a in f.allowed])
            out.add(checked & ~np.isin(values, allowed), f.name, "allowed", "error", s,
                    f"{f.name} must be one of {', '.join(_fmt(a) for a in f.allowed)}")
        if f.min_value is not None or f.max_value is not None:
            lo = -np.inf if f.min_value is None else f.min_value
            hi = np.inf if f.max_value is None else f.max_value
            with np.errstate(invalid="ignore"):
                rng = checked & ((values < lo) | (values > hi))
            out.add(rng, f.name, "range", "error", s, f"{f.name} must be between {_fmt(lo)} and {_fmt(hi)}")
            checked = checked & ~rng
        if f.warn_max is not None:
            with np.errstate(invalid="ignore"):
                out.add(checked & (values > f.warn_max), f.name, "outlier", "warning", s,
                        f"{f.name} is unusually large (above {_fmt(f.warn_max)})")
        typed[f.name] = values
    _identities(typed, out, tol_abs, tol_rel)
    frame = pd.DataFrame(typed, index=index, copy=False)
    return ValidationResult(typed=frame, issues=out.frame())


def _multiselect(s: np.ndarray, empty: np.ndarray, f: FieldLike, out: _Collector) -> np.ndarray:
    allowed = {_fmt(float(a)) for a in f.allowed} | {str(a) for a in f.allowed}
    present = np.flatnonzero(~empty)
    # Few rows carry a multi-select answer (22% and 65% in the extract): check only those.
    bad = np.zeros(len(s), dtype=bool)
    if present.size:
        bad[present] = [any(tok not in allowed for tok in v.split()) for v in s[present]]
    out.add(bad, f.name, "allowed", "error", s,
            f"{f.name} must be space-separated codes from {', '.join(_fmt(a) for a in f.allowed)}")
    return _blank_to_none(s, empty)


def _identities(typed: dict[str, np.ndarray], out: _Collector, tol_abs: float, tol_rel: float) -> None:
    def check(result: str, expected: np.ndarray, rule: str, message: str) -> None:
        actual = typed[result]
        with np.errstate(invalid="ignore"):
            bad = np.abs(actual - expected) > tol_abs + tol_rel * np.abs(actual)
        out.add(bad, result, rule, "error", actual.astype(object), message)

    for result, terms in contract.SUM_IDENTITIES:
        if result not in typed or any(t not in typed for _, t in terms):
            continue
        expected = np.zeros(len(typed[result]))
        for sign, t in terms:
            expected = expected + sign * typed[t]
        formula = " ".join(("+ " if sign > 0 else "- ") + t for sign, t in terms).lstrip("+ ")
        check(result, expected, "sum_identity", f"{result} must equal {formula}")
    for result, annual in contract.PER_DAY_IDENTITIES:
        if result in typed and annual in typed:
            check(result, typed[annual] / 365.0, "per_day_identity", f"{result} must equal {annual} / 365")
    for usd, ugx in contract.CURRENCY_PAIRS:
        if usd in typed and ugx in typed:
            check(usd, typed[ugx] / contract.UGX_PER_USD, "currency_identity",
                  f"{usd} must equal {ugx} / {contract.UGX_PER_USD:.2f}")
