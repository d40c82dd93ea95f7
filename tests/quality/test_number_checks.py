"""The number checks skip what cannot fail (by a column's bounds, or by counting a few codes) and take
findings as row indices; on awkward columns and rule parameters they still give exactly what the
frozen engine gives: the same findings in the same order, typed values and scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from quality import engine
from quality.rules import compile_rules

from . import frozen_engine
from .test_small_inputs import assert_same

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
N = 3000  # above the small-input and Arrow thresholds: the general path


@dataclass
class Field:
    name: str
    type: str
    required: bool = False
    allowed: list[Any] = field(default_factory=list)


def _rule(kind: str, name: str, level: str = "semantic", **params: Any) -> dict[str, Any]:
    return {"code": f"{kind}.{name}", "kind": kind, "level": level, "severity": "error", "field": name,
            "message": f"{kind} {name}", "params": params}


# (field type, rules beyond "type") for one column each; codes with gaps, fractions and infinities,
# sentinels inside and outside the range, open ranges, and an outlier level inside the range.
CASES: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "flag": ("code", [_rule("allowed", "flag", values=[0, 1])]),
    "three": ("code", [_rule("allowed", "three", values=[1, 2, 3])]),
    "gap": ("code", [_rule("allowed", "gap", values=[1, 2, 4])]),
    "many": ("code", [_rule("allowed", "many", values=list(range(-3, 9)))]),
    "half": ("code", [_rule("allowed", "half", values=[0, 0.5, 1])]),
    "half_dec": ("decimal", [_rule("allowed", "half_dec", values=[0, 0.5, 1])]),
    "int_codes": ("integer", [_rule("allowed", "int_codes", values=[1, 2, 2.5])]),
    "inf_code": ("code", [_rule("allowed", "inf_code", values=[1, 2, float("inf")])]),
    "one_code": ("code", [_rule("allowed", "one_code", values=[7.0])]),
    "count": ("integer", [_rule("range", "count", min=0, max=50), _rule("sentinel", "count", values=[99, -1]),
                          _rule("outlier", "count", max=10)]),
    "inside": ("integer", [_rule("sentinel", "inside", values=[3]), _rule("range", "inside", min=0, max=5),
                           _rule("outlier", "inside", max=4)]),
    "open_low": ("decimal", [_rule("range", "open_low", min=None, max=100), _rule("outlier", "open_low", max=50)]),
    "open_high": ("decimal", [_rule("range", "open_high", min=0, max=None)]),
    "plain": ("decimal", []),
    "coded_range": ("code", [_rule("allowed", "coded_range", values=[0, 1, 2]), _rule("range", "coded_range", min=0,
                                                                                         max=1)]),
}
FIELDS = [Field(name, kind) for name, (kind, _) in CASES.items()]
RULES = compile_rules([r for name, (kind, extra) in CASES.items() for r in
                       [_rule("type", name, level="structural"), *extra]])
AWKWARD = [np.nan, np.inf, -np.inf, 0.5, 2.5, -0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 9.0, 11.0, 51.0, 99.0, -1.0,
           -3.0, 1e300, -1e-300, 1e15 + 0.5, 2.0**53]


def _column(rng: np.random.Generator, clean: list[float], awkward: float) -> np.ndarray:
    values = rng.choice(np.array(clean, dtype=float), N)
    odd = rng.random(N) < awkward
    values[odd] = rng.choice(np.array(AWKWARD), int(odd.sum()))
    return values


@pytest.mark.parametrize("awkward", [0.0, 0.001, 0.2])
@pytest.mark.parametrize("seed", [1, 2])
def test_number_checks_match_frozen_engine(awkward: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    typed = pd.DataFrame({
        "flag": _column(rng, [0, 1, np.nan], awkward), "three": _column(rng, [1, 2, 3], awkward),
        "gap": _column(rng, [1, 2, 4], awkward), "many": _column(rng, [-3, 0, 8], awkward),
        "half": _column(rng, [0, 0.5, 1], awkward), "half_dec": _column(rng, [0, 0.5, 1], awkward),
        "int_codes": _column(rng, [1, 2], awkward), "inf_code": _column(rng, [1, 2], awkward),
        "one_code": _column(rng, [7], awkward), "count": _column(rng, [0, 3, 12, 50], awkward),
        "inside": _column(rng, [0, 1, 2], awkward), "open_low": _column(rng, [-1e9, 10, 60], awkward),
        "open_high": _column(rng, [0, 1e9], awkward), "plain": _column(rng, [0.25, np.nan], awkward),
        "coded_range": _column(rng, [0, 1], awkward),
    })
    text = typed.astype(object).where(typed.notna(), None).map(lambda v: v if v is None else repr(v))
    for raw in (typed, text):
        got = engine.validate_frame(raw.copy(), FIELDS, rules=RULES, now=NOW)  # type: ignore[arg-type]
        want = frozen_engine.validate_frame(raw.copy(), FIELDS, rules=RULES, now=NOW)  # type: ignore[arg-type]
        assert_same(got, want)  # type: ignore[arg-type]


@pytest.mark.parametrize("fill", [np.nan, 1.0, np.inf, 0.5])
def test_number_checks_on_uniform_columns(fill: float) -> None:
    typed = pd.DataFrame({name: np.full(N, fill) for name in CASES})
    got = engine.validate_frame(typed, FIELDS, rules=RULES, now=NOW)  # type: ignore[arg-type]
    assert_same(got, frozen_engine.validate_frame(typed, FIELDS, rules=RULES, now=NOW))  # type: ignore[arg-type]


def test_whole_span() -> None:
    assert engine._whole_span((0.0, 1.0)) == (0.0, 1.0)
    assert engine._whole_span((3.0, 1.0, 2.0, 2.5)) == (1.0, 3.0)
    assert engine._whole_span((1.0, 2.0, 4.0)) is None
    assert engine._whole_span((0.5,)) is None
    assert engine._whole_span((1.0, np.inf)) == (1.0, 1.0)


@pytest.mark.parametrize("tol_rel", [1e-6, 0.0, -0.5])
@pytest.mark.parametrize("tol_abs", [0.01, 0.0, -1.0])
def test_identities_match_frozen_engine(tol_rel: float, tol_abs: float) -> None:
    rng = np.random.default_rng(5)
    a, b = _column(rng, [1.0, 2.5, 1e6], 0.2), _column(rng, [0.0, 3.0, 1e-3], 0.2)
    with np.errstate(invalid="ignore"):  # inf - inf among the awkward values
        total = a + b + rng.choice([0.0, 0.001, 0.011, -0.02, 1e-12, np.nan, np.inf], N)
    typed = pd.DataFrame({"a": a, "b": b, "total": total, "per_day": total / 365.0 + rng.choice([0.0, 0.02], N)})
    fields = [Field(name, "decimal") for name in typed.columns]
    rules = compile_rules([
        {**_rule("sum_identity", "total", level="business", terms=[[1, "a"], [1, "b"]])},
        {**_rule("sum_identity", "b", level="business", terms=[[-1, "a"], [1, "total"], [2, "a"]])},
        {**_rule("per_day_identity", "per_day", level="business", annual="total")},
    ])
    kw: dict[str, Any] = {"rules": rules, "now": NOW, "tol_abs": tol_abs, "tol_rel": tol_rel}
    assert_same(engine.validate_frame(typed, fields, **kw),  # type: ignore[arg-type]
                frozen_engine.validate_frame(typed, fields, **kw))  # type: ignore[arg-type]


TEXT_RULES = compile_rules([
    _rule("required", "place", level="structural"), _rule("unknown_value", "place", values=["Kanungu", "Mitooma"]),
    _rule("required", "code", level="structural"), _rule("pattern", "code", regex=r"^[A-Z]{3}-\d+$"),
])


@pytest.mark.parametrize("odd", [None, "", " ", float("nan"), pd.NA, np.str_("Kanungu"), " Kanungu", "Mitooma "])
def test_text_columns_kept_only_when_unchanged(odd: Any) -> None:
    """A typed text column is kept as the output only when it holds what the output would: stripped
    text and None for blanks; any other blank or padding (or, for repeated text, a str subclass: its
    values are new str objects) gives a new column."""
    rng = np.random.default_rng(7)
    places = np.array(["Kanungu", "Mitooma", "Rubirizi", None], dtype=object)[rng.integers(0, 4, N)]
    codes = np.array([f"KAN-{i}" if i % 5 else None for i in range(N)], dtype=object)
    places[::301] = odd
    codes[::307] = odd if not isinstance(odd, np.str_) else np.str_("KAN-1")
    typed = pd.DataFrame({"place": pd.Series(places, dtype=object), "code": pd.Series(codes, dtype=object)})
    fields = [Field("place", "text"), Field("code", "text")]
    got = engine.validate_frame(typed, fields, rules=TEXT_RULES, now=NOW)  # type: ignore[arg-type]
    assert_same(got, frozen_engine.validate_frame(typed, fields, rules=TEXT_RULES, now=NOW))  # type: ignore[arg-type]
    # repeated text gets new str values; distinct text keeps its own objects, str subclasses too
    kept = {"place": odd is None, "code": odd is None or isinstance(odd, np.str_)}
    for name in ("place", "code"):
        assert np.shares_memory(got.typed[name].to_numpy(), typed[name].to_numpy()) is kept[name], name


def _awkward_samples() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    n = 60_000  # above the size where ranks are bracketed by a sample
    return [
        rng.normal(size=n), rng.integers(0, 17, n).astype(float), np.round(rng.exponential(20, n)),
        np.sort(rng.normal(size=n)), np.sort(rng.integers(0, 3, n).astype(float))[::-1].copy(),
        np.full(n, 4.0), np.concatenate([np.full(n // 2, 4.0), np.full(n // 2 + 1, 5.0)]),
        np.where(rng.random(n) < 0.5, -0.0, 0.0), np.where(rng.random(n) < 0.01, np.inf, rng.normal(size=n)),
        np.concatenate([np.full(n, -np.inf), [1.0]]), rng.normal(size=101), np.array([3.0]),
    ]


@pytest.mark.parametrize("i", range(12))
def test_median_is_numpys(i: int) -> None:
    v = _awkward_samples()[i]
    with np.errstate(invalid="ignore"):
        deviations = np.abs(v - np.median(v))
    for part in (v, v[:-1], deviations[~np.isnan(deviations)]):  # NaN-free, as the z-scores take them
        if not part.size:
            continue
        assert engine._median(part.copy()) == np.median(part)
        ranks = [0, part.size // 3, part.size - 1]
        assert engine._ranked(part.copy(), ranks) == np.sort(part)[ranks].tolist()


@pytest.mark.parametrize("threshold", [5.0, 0.0, -1.0, np.nan])
def test_far_rows_are_the_z_score_rows(threshold: float) -> None:
    rng = np.random.default_rng(3)
    part = np.concatenate([rng.normal(size=5000), [np.nan, np.inf, -np.inf, 1e308, -1e308, 5e-324]])
    for med, mad in ((0.0, 1.0), (0.1, 1e-3), (1e15, 1e-300), (-2.0, 1e300), (0.0, 5e-324)):
        with np.errstate(invalid="ignore", over="ignore"):
            z = np.abs(0.6745 * (part - med) / mad)
        np.testing.assert_array_equal(engine._far(part, med, mad, threshold), np.flatnonzero(z > threshold))


def test_repeated_text_with_values_first_seen_late() -> None:
    """Values (and blanks) whose objects first appear after the rows sampled for grouping."""
    late = engine._Text.SAMPLE + 100
    places = np.array(["Kanungu", "Mitooma"] * (late // 2) + ["Kisoro ", "Rubirizi", "", None] * 25, dtype=object)
    places[late + 3] = float("nan")
    typed = pd.DataFrame({"place": pd.Series(places, dtype=object), "code": pd.Series(["ABC-1"] * len(places))})
    fields = [Field("place", "text"), Field("code", "text")]
    got = engine.validate_frame(typed, fields, rules=TEXT_RULES, now=NOW)  # type: ignore[arg-type]
    assert_same(got, frozen_engine.validate_frame(typed, fields, rules=TEXT_RULES, now=NOW))  # type: ignore[arg-type]
    assert set(got.typed["place"].dropna()) == {"Kanungu", "Mitooma", "Kisoro", "Rubirizi"}


@pytest.mark.parametrize("weights", [{"validity": 2, "completeness": 0.5}, {"consistency": -1.0, "validity": 3.0},
                                     {"completeness": 1}])
def test_scores_of_many_rows_match_frozen_engine(weights: dict[str, float], settings: Any) -> None:
    settings.RTV_QUALITY_WEIGHTS = weights
    rng = np.random.default_rng(9)
    typed = pd.DataFrame({"flag": _column(rng, [0, 1, np.nan], 0.3), "count": _column(rng, [0, 3, 12], 0.3)})
    fields = [Field("flag", "code"), Field("count", "integer")]
    got = engine.validate_frame(typed, fields, rules=RULES, now=NOW)  # type: ignore[arg-type]
    assert_same(got, frozen_engine.validate_frame(typed, fields, rules=RULES, now=NOW))  # type: ignore[arg-type]


@pytest.mark.parametrize("k", [0, 1, 3, 8, 9])
def test_grouping_of_few_groups_is_the_sorted_one(k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    codes = np.random.default_rng(k).integers(-1, max(k, 0), 5000) if k else np.full(5000, -1)
    by = np.array([None if c < 0 else f"g{c}" for c in codes], dtype=object)
    few = engine._grouping(by, None)
    monkeypatch.setattr(engine, "_FEW_GROUPS", -1)
    sorted_order, sorted_bounds = engine._grouping(by, None)
    np.testing.assert_array_equal(few[0], sorted_order)
    np.testing.assert_array_equal(few[1], sorted_bounds)
