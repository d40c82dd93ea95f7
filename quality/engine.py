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
from datetime import UTC, datetime, timedelta
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .rules import CompiledRule, RuleSet

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
    scores: pd.DataFrame  # completeness, validity, consistency, score per row (0-1)

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
                self.values.append(np.asarray(text)[idx].astype(object))

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
                   rules: RuleSet | None = None, tol_abs: float = 0.01, tol_rel: float = 1e-6,
                   now: datetime | None = None) -> ValidationResult:
    """Type every field present in ``raw`` (a frame, or a mapping of columns: cheaper for the few
    rows of a device submission; strings, '' for empty) by its contract type, then apply the
    active rules.  Which checks run, their severity, parameters and messages are the rules' (data)."""
    if rules is None:
        from .rules import active_rules

        rules = active_rules()
    columns = raw.columns if isinstance(raw, pd.DataFrame) else raw.keys()
    n = len(raw) if isinstance(raw, pd.DataFrame) else len(next(iter(raw.values()), []))
    index = raw.index if isinstance(raw, pd.DataFrame) else pd.RangeIndex(n)
    out = _Collector()
    typed: dict[str, np.ndarray] = {}
    for f in fields:
        kinds = {r.kind: r for r in rules.by_field.get(f.name, ())}
        if f.name not in columns:
            if (r := kinds.get("required")) is not None:
                out.add(np.ones(n, dtype=bool), f.name, "required", r.severity, np.full(n, "", dtype=object),
                        f"{r.message} (column missing)")
            continue
        column = raw[f.name]
        if f.type in ("integer", "decimal", "code") and _is_numeric(column):
            # Already typed (stored values, Parquet): no text to parse, only the rules to apply.
            values = np.asarray(column, dtype="float64")
            _number_rules(f, kinds, values, ~np.isnan(values), np.zeros(n, dtype=bool), values, out)
            typed[f.name] = values
            continue
        s = _strings(column)
        empty = pc.equal(s, "").to_numpy(zero_copy_only=False) if isinstance(s, pa.Array) else s == ""
        present = ~empty
        if (r := kinds.get("required")) is not None:
            out.add(empty, f.name, "required", r.severity, s, r.message)
        if f.type in ("text", "uuid"):
            if (r := kinds.get("pattern")) is not None:
                out.add(present & ~_fullmatch(s, r.params["regex"]), f.name, "pattern", r.severity, s, r.message)
            s = _as_objects(s)
            typed[f.name] = _blank_to_none(s, empty)
            if (r := kinds.get("unknown_value")) is not None:
                known = np.isin(s, np.array([str(a) for a in r.params["values"]], dtype=object))
                out.add(present & ~known, f.name, "unknown_value", r.severity, s, r.message)
            continue
        if f.type == "datetime":
            s = _as_objects(s)
            stamps = pd.to_datetime(pd.Series(s).where(present), errors="coerce", utc=True, format="ISO8601")
            naive = np.array([bool(v) and not _has_offset(v) for v in s], dtype=bool)
            bad = present & (stamps.isna().to_numpy() | naive)
            if (r := kinds.get("type")) is not None:
                out.add(bad, f.name, "type", r.severity, s, r.message)
            typed[f.name] = stamps.where(~bad).to_numpy()
            continue
        if f.type == "multiselect":
            if (r := kinds.get("allowed")) is not None:
                allowed = sorted({_fmt(float(a)) for a in r.params["values"]} | {str(a) for a in r.params["values"]})
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
        values = _numbers(s)
        bad_type = present & np.isnan(values)
        typed[f.name] = _number_rules(f, kinds, values, present, bad_type, s, out)
    _business(typed, rules, out, tol_abs, tol_rel, now or datetime.now(UTC))
    _statistical(typed, rules, out)
    issues = out.frame()
    # Object columns stay object: letting pandas re-infer them as Arrow strings cost ~20% of a run.
    frame = pd.DataFrame({k: (pd.Series(v, index=index, dtype=object, copy=False) if v.dtype == object else v)
                          for k, v in typed.items()}, index=index, copy=False)
    return ValidationResult(typed=frame, issues=issues, scores=quality_scores(issues, n, rules, set(typed) | set(columns)))


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


def _number_rules(f: FieldLike, kinds: dict[str, CompiledRule], values: np.ndarray, present: np.ndarray,
                  bad_type: np.ndarray, s: np.ndarray | pa.Array, out: _Collector) -> np.ndarray:
    allowed_values = kinds["allowed"].params["values"] if "allowed" in kinds else []
    if f.type in ("integer", "code"):
        fractional_codes = any(isinstance(a, float) and not a.is_integer() for a in allowed_values)
        if f.type == "integer" or not fractional_codes:
            with np.errstate(invalid="ignore"):
                bad_type = bad_type | (~np.isnan(values) & (np.mod(values, 1) != 0))
    if (r := kinds.get("type")) is not None:
        out.add(bad_type, f.name, "type", r.severity, s, r.message)
    values = np.where(bad_type, np.nan, values)
    checked = ~np.isnan(values)
    if (r := kinds.get("sentinel")) is not None:
        sentinel = checked & np.isin(values, np.asarray(r.params["values"], dtype=float))
        out.add(sentinel, f.name, "sentinel", r.severity, s, r.message)
        checked = checked & ~sentinel
    if (r := kinds.get("allowed")) is not None:
        codes = np.asarray([float(a) for a in r.params["values"]])
        out.add(checked & ~np.isin(values, codes), f.name, "allowed", r.severity, s, r.message)
    if (r := kinds.get("range")) is not None:
        lo = -np.inf if r.params.get("min") is None else r.params["min"]
        hi = np.inf if r.params.get("max") is None else r.params["max"]
        with np.errstate(invalid="ignore"):
            rng = checked & ((values < lo) | (values > hi))
        out.add(rng, f.name, "range", r.severity, s, r.message)
        checked = checked & ~rng
    if (r := kinds.get("outlier")) is not None:
        with np.errstate(invalid="ignore"):
            out.add(checked & (values > r.params["max"]), f.name, "outlier", r.severity, s, r.message)
    return values


def _has_offset(text: str) -> bool:
    return text.endswith(("Z", "z")) or bool(re.search(r"[+-]\d\d:?\d\d$", text))


def _business(typed: dict[str, np.ndarray], rules: RuleSet, out: _Collector, tol_abs: float, tol_rel: float,
              now: datetime) -> None:
    def check(r: CompiledRule, actual: np.ndarray, expected: np.ndarray) -> None:
        with np.errstate(invalid="ignore"):
            bad = np.abs(actual - expected) > tol_abs + tol_rel * np.abs(actual)
        out.add(bad, r.field, r.kind, r.severity, actual.astype(object), r.message)

    for r in rules.by_kind.get("sum_identity", ()):
        terms = r.params["terms"]
        if r.field in typed and all(t in typed for _, t in terms):
            expected = np.zeros(len(typed[r.field]))
            for sign, t in terms:
                expected = expected + sign * typed[t]
            check(r, typed[r.field], expected)
    for r in rules.by_kind.get("per_day_identity", ()):
        if r.field in typed and r.params["annual"] in typed:
            check(r, typed[r.field], typed[r.params["annual"]] / 365.0)
    for r in rules.by_kind.get("currency_identity", ()):
        if r.field in typed and r.params["ugx"] in typed:
            check(r, typed[r.field], typed[r.params["ugx"]] / r.params["rate"])
    for r in rules.by_kind.get("gps_in_uganda", ()):
        if "gps_lat" in typed and "gps_lon" in typed:
            lat, lon = typed["gps_lat"].astype(float), typed["gps_lon"].astype(float)
            p = r.params
            with np.errstate(invalid="ignore"):
                outside = ~np.isnan(lat) & ~np.isnan(lon) & (
                    (lat < p["lat_min"]) | (lat > p["lat_max"]) | (lon < p["lon_min"]) | (lon > p["lon_max"]))
            out.add(outside, r.field, r.kind, r.severity,
                    np.array([f"{a},{b}" for a, b in zip(lat, lon, strict=True)], dtype=object), r.message)
    for r in rules.by_kind.get("not_in_future", ()):
        if r.field in typed:
            limit = np.datetime64((now + timedelta(minutes=r.params.get("tolerance_minutes", 0))).replace(tzinfo=None))
            stamps = pd.to_datetime(typed[r.field], utc=True).tz_localize(None).to_numpy()
            future = ~pd.isna(stamps) & (stamps > limit)
            out.add(future, r.field, r.kind, r.severity, typed[r.field].astype(str).astype(object), r.message)


def _statistical(typed: dict[str, np.ndarray], rules: RuleSet, out: _Collector) -> None:
    """Robust z-scores within each district (median and MAD, so the outliers do not hide themselves)."""
    for r in rules.by_kind.get("robust_z", ()):
        by = r.params.get("by", "district")
        if r.field not in typed or by not in typed or len(typed[r.field]) < r.params.get("min_group", 20):
            continue
        frame = pd.DataFrame({"x": typed[r.field].astype(float), "g": typed[by]})
        grouped = frame.groupby("g", dropna=True)["x"]
        med = grouped.transform("median")
        mad = (frame["x"] - med).abs().groupby(frame["g"]).transform("median")
        size = grouped.transform("count")
        with np.errstate(invalid="ignore", divide="ignore"):
            z = 0.6745 * (frame["x"] - med) / mad
        flag = (size >= r.params.get("min_group", 20)) & (mad > 0) & (z.abs() > r.params.get("threshold", 5.0))
        out.add(flag.fillna(False).to_numpy(dtype=bool), r.field, r.kind, r.severity,
                typed[r.field].astype(object), r.message)


SCORE_LEVELS = {"completeness": "structural", "validity": "semantic", "consistency": "business"}


def quality_scores(issues: pd.DataFrame, n: int, rules: RuleSet, present: set[str]) -> pd.DataFrame:
    """Per row: completeness (required fields present), validity (semantic rules passed),
    consistency (business rules passed), each 0-1, and the weighted overall score."""
    from django.conf import settings

    weights = settings.RTV_QUALITY_WEIGHTS
    out: dict[str, np.ndarray] = {}
    level_of = rules.levels()
    keys = (issues["rule"] + "." + issues["field"]).to_numpy(dtype=object) if len(issues) else np.array([], dtype=object)
    issue_levels = np.array([level_of.get(k, "") for k in keys], dtype=object)
    rows = issues["row"].to_numpy(dtype=np.int64) if len(issues) else np.array([], dtype=np.int64)
    for name, level in SCORE_LEVELS.items():
        if name == "completeness":
            applicable = sum(1 for r in rules.by_kind.get("required", ()) if r.field in present)
            failing = rows[(issue_levels == level) & (issues["rule"].to_numpy(dtype=object) == "required")] \
                if len(issues) else rows
        else:
            applicable = sum(1 for r in rules.rules if r.level == level and r.field in present)
            failing = rows[issue_levels == level] if len(issues) else rows
        counts = np.bincount(failing, minlength=n)[:n] if n else np.zeros(0)
        out[name] = np.clip(1.0 - counts / max(applicable, 1), 0.0, 1.0)
    total = sum(weights.values())
    out["score"] = sum(out[k] * w for k, w in weights.items()) / total
    return pd.DataFrame(out)
