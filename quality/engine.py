"""The validator every door uses: schema rules compiled to vectorised pandas masks.

Input is a frame of raw strings keyed by canonical field name; output is the typed frame and one
row per finding (``row``: 0-based position, ``field``, ``rule``, ``severity``, ``value``,
``message``).  No per-row Python loop: each rule is one mask over the whole column.

Rule codes (stable; reports, the generator's sidecar and tests use them):
  errors:   required, type, range, allowed, sum_identity, per_day_identity, currency_identity
  warnings: type (lenient fields), sentinel, outlier, pattern, unknown_value, duplicate_household
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rtv import contract

ISSUE_COLUMNS = ["row", "field", "rule", "severity", "value", "message"]


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


class _Collector:
    def __init__(self) -> None:
        self.parts: list[pd.DataFrame] = []

    def add(self, mask: np.ndarray | pd.Series, field: str, rule: str, severity: str, values: pd.Series,
            message: str) -> None:
        m = np.asarray(mask, dtype=bool)
        idx = np.flatnonzero(m)
        if idx.size == 0:
            return
        self.parts.append(pd.DataFrame({
            "row": idx,
            "field": field,
            "rule": rule,
            "severity": severity,
            "value": values.to_numpy(dtype=object)[idx].astype(str),
            "message": message,
        }))

    def frame(self) -> pd.DataFrame:
        if not self.parts:
            return pd.DataFrame({c: pd.Series(dtype="int64" if c == "row" else "object") for c in ISSUE_COLUMNS})
        return pd.concat(self.parts, ignore_index=True)


def _fmt(v: float | int | str | None) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


def _numeric(text: pd.Series) -> pd.Series:
    """Parse stripped text as float64 in Arrow's C++ kernels (NaN where empty or not a number):
    pd.to_numeric took 60% of validation time."""
    arr = pa.array(text, type=pa.string(), from_pandas=True)
    valid = pc.match_substring_regex(arr, _NUMBER)
    parsed = pc.cast(pc.if_else(valid, arr, pa.scalar(None, pa.string())), pa.float64())
    return pd.Series(parsed.to_numpy(zero_copy_only=False), index=text.index, dtype="float64")


def validate_frame(raw: pd.DataFrame, fields: Sequence[FieldLike], *, tol_abs: float = 0.01,
                   tol_rel: float = 1e-6) -> ValidationResult:
    """Type and check every field present in ``raw`` (strings, '' for empty)."""
    n = len(raw)
    out = _Collector()
    typed: dict[str, pd.Series] = {}
    for f in fields:
        if f.name not in raw.columns:
            if f.required:
                out.add(np.ones(n, dtype=bool), f.name, "required", "error", pd.Series([""] * n),
                        f"{f.name} is required (column missing)")
            continue
        s = raw[f.name].astype("string").fillna("").str.strip()
        empty = (s == "").to_numpy()
        if f.required:
            out.add(empty, f.name, "required", "error", s, f"{f.name} is required")
        if f.type in ("text", "uuid", "datetime"):
            typed[f.name] = s.where(~empty, None).astype(object)
            if f.allowed:
                unknown = ~empty & ~s.isin([str(a) for a in f.allowed]).to_numpy()
                out.add(unknown, f.name, "unknown_value", "warning", s, f"{f.name} is not one of the known values")
            if f.pattern:
                bad = ~empty & ~s.str.fullmatch(f.pattern).fillna(False).to_numpy(dtype=bool)
                out.add(bad, f.name, "pattern", "warning", s, f"{f.name} does not match the expected pattern")
            continue
        if f.type == "multiselect":
            typed[f.name] = _multiselect(s, empty, f, out)
            continue
        if f.type == "boolean":
            low = s.str.lower()
            val = low.map({"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False})
            bad = ~empty & val.isna().to_numpy()
            out.add(bad, f.name, "type", "error", s, f"{f.name} must be true or false")
            typed[f.name] = val.astype(object)
            continue
        num = _numeric(s)
        bad_type = ~empty & num.isna().to_numpy()
        if f.type in ("integer", "code"):
            not_whole = ~np.isnan(num.to_numpy()) & (np.mod(num.to_numpy(), 1) != 0)
            if f.type == "integer" or not any(isinstance(a, float) and not a.is_integer() for a in f.allowed):
                bad_type |= not_whole
        if f.lenient:
            out.add(bad_type, f.name, "type", "warning", s, f"{f.name} is not a number; the value was dropped")
        else:
            out.add(bad_type, f.name, "type", "error", s, f"{f.name} must be a number")
        num = num.where(~bad_type)
        values = num.to_numpy()
        present = ~np.isnan(values)
        sentinel = present & np.isin(values, np.asarray(f.sentinels, dtype=float)) if f.sentinels else np.zeros(n, bool)
        out.add(sentinel, f.name, "sentinel", "warning", s, f"{f.name} holds a 'not known' code")
        checked = present & ~sentinel
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
        typed[f.name] = num
    frame = pd.DataFrame(typed, index=raw.index)
    _identities(frame, out, tol_abs, tol_rel)
    return ValidationResult(typed=frame, issues=out.frame())


def _multiselect(s: pd.Series, empty: np.ndarray, f: FieldLike, out: _Collector) -> pd.Series:
    tokens = s.str.split().explode()
    tokens = tokens[tokens.notna() & (tokens != "")]
    num = pd.to_numeric(tokens, errors="coerce")
    allowed = {float(a) for a in f.allowed}
    bad_tok = num.isna() | (~num.isin(list(allowed)) if allowed else False)
    bad_rows = np.zeros(len(s), dtype=bool)
    if bad_tok.any():
        bad_rows[np.unique(np.asarray(s.index.get_indexer(tokens.index[bad_tok.to_numpy()])))] = True
    out.add(bad_rows & ~empty, f.name, "allowed", "error", s,
            f"{f.name} must be space-separated codes from {', '.join(_fmt(a) for a in f.allowed)}")
    return s.where(~empty, None).astype(object)


def _identities(frame: pd.DataFrame, out: _Collector, tol_abs: float, tol_rel: float) -> None:
    def check(result: str, expected: pd.Series, rule: str, message: str) -> None:
        actual = frame[result]
        diff = (actual - expected).abs().to_numpy()
        limit = tol_abs + tol_rel * np.abs(actual.to_numpy())
        with np.errstate(invalid="ignore"):
            bad = ~np.isnan(diff) & (diff > limit)
        out.add(bad, result, rule, "error", actual.astype(object), message)

    for result, terms in contract.SUM_IDENTITIES:
        names = [t for _, t in terms]
        if result not in frame or any(t not in frame for t in names):
            continue
        expected = sum((sign * frame[t] for sign, t in terms), pd.Series(0.0, index=frame.index))
        formula = " ".join(("+ " if sign > 0 else "- ") + t for sign, t in terms).lstrip("+ ")
        check(result, expected, "sum_identity", f"{result} must equal {formula}")
    for result, annual in contract.PER_DAY_IDENTITIES:
        if result in frame and annual in frame:
            check(result, frame[annual] / 365.0, "per_day_identity", f"{result} must equal {annual} / 365")
    for usd, ugx in contract.CURRENCY_PAIRS:
        if usd in frame and ugx in frame:
            check(usd, frame[ugx] / contract.UGX_PER_USD, "currency_identity",
                  f"{usd} must equal {ugx} / {contract.UGX_PER_USD:.2f}")
