"""The small-input path of the validator (device submissions, real-time predictions) gives exactly
what the general path gives: the same findings in the same order, typed frame and scores."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ingestion.submissions import SURVEY_NAMES, _text
from ingestion.synthetic.generator import generate
from quality import engine
from quality.engine import ValidationResult, validate_frame
from quality.rules import contract_rules
from rtv.selectors import current_schema

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
MESSY: list[Any] = [
    "", " ", "  7 ", "\t3\n", "nan", "NaN", "inf", "-inf", "1e400", "-1e400", "1,5", "abc", "+3", "-0", ".5", "5.",
    "1e3", "1E-2", "0x10", "1.2.3", "٣", "2.5", "3.0", "99", "98", "-1", "0", "100000000", "12\x00", "\x00", "é",
    " RUK-KAT-JOH-R1 ", "1 2 9", "1  2", "yes", "TRUE", "no", "2025-01-01T00:00:00", "2030-01-01T00:00:00Z",
    "2025-05-31T10:00:00+03:00", "2025-05-31 10:00:00+0300", "not a date", None, float("nan"), pd.NA, 7, 2.5, True,
    "Kampala", "Rukungiri", "1e-400", "e5", "+", "-", ".", "1e", "00012", "١٢",
]


def envelope_raw(n: int, seed: int, messy: float = 0.0) -> dict[str, list[Any]]:
    """``n`` generated rows as ``ingestion.submissions._validate`` builds its input; with ``messy``,
    that share of the cells replaced by awkward values (not only the text the API would send)."""
    data, _ = generate(n, seed=seed, bad_rate=0.05)
    rows = [{k: None if v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v for k, v in rec.items()}
            for rec in data.to_dict("records")]
    rng = np.random.default_rng(seed)
    stamps = [NOW - timedelta(minutes=int(m)) for m in rng.integers(-60, 100_000, n)]
    raw: dict[str, list[Any]] = {k: [_text(r.get(k)) for r in rows] for k in SURVEY_NAMES}
    raw["collected_at"] = [s.isoformat() for s in stamps]
    raw["gps_lat"] = [_text(round(float(v), 5)) for v in rng.uniform(-3.0, 6.0, n)]
    raw["gps_lon"] = [_text(round(float(v), 5)) for v in rng.uniform(28.0, 37.0, n)]
    if messy:
        for col in raw.values():
            for i in np.flatnonzero(rng.random(n) < messy):
                col[i] = MESSY[int(rng.integers(len(MESSY)))]
    return raw


def assert_same(a: ValidationResult, b: ValidationResult) -> None:
    # First, before a frame exists: a small result's findings as plain dicts, the general one's from its frame.
    if hasattr(a, "issue_records") and hasattr(b, "issue_records"):  # the frozen engine has no such method
        assert a.issue_records() == b.issue_records()
        assert a.score_records() == b.score_records()
        assert all(type(v) is float for row in a.score_records() for v in row.values())
        ra, rb = a.typed_records(), b.typed_records()  # a: from its arrays, b: from its frame
        assert len(ra) == len(rb) and all(x.keys() == y.keys() for x, y in zip(ra, rb, strict=True))
        for x, y in zip(ra, rb, strict=True):
            for k in x:
                assert type(x[k]) is type(y[k]) and (x[k] == y[k] or (x[k] != x[k] and y[k] != y[k])), k
        assert all(type(v) is type(w) for x, y in zip(a.issue_records(), b.issue_records(), strict=True)
                   for v, w in zip(x.values(), y.values(), strict=True))
    pd.testing.assert_frame_equal(a.issues, b.issues, check_exact=True)
    assert list(a.issues.dtypes) == list(b.issues.dtypes)
    pd.testing.assert_frame_equal(a.typed, b.typed, check_exact=True)
    assert list(a.typed.dtypes) == list(b.typed.dtypes)
    for col in a.typed.columns:  # the same Python objects' types (None stays None, str stays str)
        assert [type(v) for v in a.typed[col]] == [type(v) for v in b.typed[col]], col
    pd.testing.assert_frame_equal(a.scores, b.scores, check_exact=True)


def copied(raw: Any) -> Any:
    return raw.copy() if isinstance(raw, pd.DataFrame) else {k: list(v) for k, v in raw.items()}


def both(raw: dict[str, list[Any]], fields: list[Any], **kw: Any) -> tuple[ValidationResult, ValidationResult]:
    rules = contract_rules()
    small = validate_frame(copied(raw), fields, rules=rules, now=NOW, **kw)
    limit = engine.SMALL_MAX_ROWS
    engine.SMALL_MAX_ROWS = -1
    try:
        general = validate_frame(copied(raw), fields, rules=rules, now=NOW, **kw)
    finally:
        engine.SMALL_MAX_ROWS = limit
    return small, general


@pytest.mark.parametrize("n", [1, 7, 100])
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("messy", [0.0, 0.05, 0.3])
def test_small_path_matches_general_path(n: int, seed: int, messy: float) -> None:
    raw = envelope_raw(n, seed, messy)
    fields = [f for f in current_schema().fields if f.name in raw]
    small, general = both(raw, fields, tol_abs=0.01, tol_rel=1e-6)
    assert_same(small, general)
    if messy >= 0.05:
        assert len(small.issues) > 0


@pytest.mark.parametrize("n", [1, 7, 100])
def test_small_path_with_missing_columns_and_every_field(n: int) -> None:
    raw = envelope_raw(n, seed=5, messy=0.1)
    for gone in ("district", "household_size", "loan_from", "collected_at"):
        del raw[gone]
    fields = list(current_schema().fields)  # also fields the input lacks: 'column missing'
    small, general = both(raw, fields)
    assert_same(small, general)
    assert (small.issues["message"].str.endswith("(column missing)")).any()


def test_small_path_on_numpy_and_typed_columns() -> None:
    raw: dict[str, Any] = envelope_raw(7, seed=9, messy=0.1)
    raw["district"] = np.array(raw["district"], dtype=object)
    raw["household_size"] = np.array([1, 2, 0, 40, 3, 99, 5], dtype=float)  # already typed
    fields = [f for f in current_schema().fields if f.name in raw]
    small, general = both(raw, fields)
    assert_same(small, general)


def test_small_path_on_an_empty_input() -> None:
    raw = {k: [] for k in envelope_raw(1, seed=1)}
    fields = [f for f in current_schema().fields if f.name in raw]
    small, general = both(raw, fields)
    assert_same(small, general)


@pytest.mark.parametrize("n", [1, 7, 100])
def test_small_path_on_frames_of_text_and_of_typed_values(n: int) -> None:
    raw = envelope_raw(n, seed=11, messy=0.1)
    text = pd.DataFrame({k: pd.Series([None if v is None or v is pd.NA else str(v) for v in col], dtype="str")
                         for k, col in raw.items()}, index=pd.RangeIndex(10, 10 + n))
    fields = [f for f in current_schema().fields if f.name in raw]
    small, general = both(text, fields)  # type: ignore[arg-type]
    assert_same(small, general)
    typed_small, typed_general = both(small.typed, fields)  # type: ignore[arg-type]
    assert_same(typed_small, typed_general)


@pytest.mark.parametrize("stamps", [
    ["2025-05-31T10:00:00+03:00", "2025-06-01T12:30:00Z", "2025-06-01T09:00:00.5-04:00", "", "1999-12-31T23:59:59.123456+00:00"],
    ["2025-06-01T12:00:00.000001Z"] * 3,
    ["2025-02-30T10:00:00+03:00", "2025-05-31T10:00:00+03:00"],  # an impossible day: pandas judges the column
    ["2025-05-31T10:00:00", "2025-05-31T10:00:00+03:00"],  # no offset: a type error, found by the pandas path
])
def test_device_date_times_parse_as_pandas_parses_them(stamps: list[str]) -> None:
    """Plain ISO instants with an offset (what devices send) skip pandas in a small input; the typed
    values, the findings (type, not in the future) and the scores are the general path's."""
    raw = envelope_raw(len(stamps), seed=3)
    raw["collected_at"] = stamps
    fields = [f for f in current_schema().fields if f.name in raw]
    small, general = both(raw, fields)
    assert_same(small, general)
