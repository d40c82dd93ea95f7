"""Temporal features from the optional collection dates, the leak guard that lets exactly those
dates in, and the output names with the sources they map back to."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from features.pipeline import (
    DERIVED_FEATURES,
    TEMPORAL_FEATURES,
    TEMPORAL_INPUTS,
    LeakageError,
    SurveyFeatures,
    assert_leak_free,
    build_model_pipeline,
    feature_sources,
    input_fields,
)
from ingestion.synthetic.generator import generate
from rtv import contract


@pytest.fixture(scope="module")
def households() -> pd.DataFrame:
    data, _ = generate(1500, seed=3)
    return data


def fields_of(frame: pd.DataFrame) -> list[str]:
    return [f for f in input_fields() if f in frame.columns]


def dated(frame: pd.DataFrame, collected: list[str | None], previous: list[str | None]) -> pd.DataFrame:
    out = frame.head(len(collected)).copy()
    out["collected_at"] = pd.to_datetime(pd.Series(collected, index=out.index), utc=True).dt.tz_convert("Africa/Kampala")
    out["previous_collected_at"] = pd.to_datetime(pd.Series(previous, index=out.index), utc=True)
    return out


# --- temporal features -------------------------------------------------------------------------

def test_month_season_and_days_since_the_previous_survey(households: pd.DataFrame) -> None:
    frame = dated(households,
                  ["2024-04-15T10:00:00+03:00", "2024-07-01T08:00:00+03:00", "2024-02-29T22:00:00+00:00",
                   None, "2024-12-10T12:00:00+03:00", "2024-10-01T00:00:00+03:00"],
                  ["2023-04-15T10:00:00+03:00", None, "2024-02-28T22:00:00+00:00",
                   "2024-01-01T00:00:00+03:00", "2024-12-09T00:00:00+03:00", None])
    out = SurveyFeatures(fields_of(frame)).fit(frame).transform(frame).reset_index(drop=True)
    month = np.array([4, 7, 3, np.nan, 12, 10])  # row 2 is 1 March in Kampala (UTC+3), 29 Feb in UTC
    np.testing.assert_allclose(out["collected_month_sin"], np.sin(2 * np.pi * month / 12), atol=1e-12)
    np.testing.assert_allclose(out["collected_month_cos"], np.cos(2 * np.pi * month / 12), atol=1e-12)
    # Uganda's rainy seasons: March-May and September-November.
    np.testing.assert_array_equal(out["rainy_season"], [1.0, 0.0, 1.0, np.nan, 0.0, 1.0])
    np.testing.assert_allclose(out["days_since_previous_survey"], [366.0, np.nan, 1.0, np.nan, 1.5, np.nan])


def test_every_month_maps_to_its_season() -> None:
    frame = pd.DataFrame({"collected_at": pd.date_range("2025-01-01", periods=12, freq="MS", tz="Africa/Kampala")
                          + pd.Timedelta(days=14)})
    out = SurveyFeatures(["household_size"]).fit(frame).transform(frame)
    assert out["rainy_season"].tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0]
    # Cyclic: December sits next to January (angle 2*pi*month/12 on the unit circle).
    angle = 2 * np.pi * np.arange(1, 13) / 12
    np.testing.assert_allclose(out["collected_month_sin"], np.sin(angle), atol=1e-12)
    np.testing.assert_allclose(out["collected_month_cos"], np.cos(angle), atol=1e-12)
    gaps = np.hypot(np.diff(out["collected_month_sin"], append=out["collected_month_sin"][0]),
                    np.diff(out["collected_month_cos"], append=out["collected_month_cos"][0]))
    np.testing.assert_allclose(gaps, gaps[0])  # every month, December -> January included, one step apart


def test_without_dates_the_temporal_columns_exist_and_are_missing(households: pd.DataFrame) -> None:
    out = SurveyFeatures(fields_of(households)).fit(households).transform(households.head(4))
    assert list(out.columns[-len(TEMPORAL_FEATURES):]) == list(TEMPORAL_FEATURES)
    assert out[list(TEMPORAL_FEATURES)].isna().all().all()
    assert "collected_at" not in out and "previous_collected_at" not in out


def test_dates_as_iso_text_in_any_spelling_unparseable_ones_are_missing(households: pd.DataFrame) -> None:
    frame = households.head(4).copy()
    frame["collected_at"] = ["2024-05-02T09:00:00+03:00", "not a date", None, "2024-09-01T07:30:00.250+03:00"]
    frame["previous_collected_at"] = ["2024-05-01 09:00", None, "2024-01-01", "2024-08-31"]  # naive: read as UTC
    out = SurveyFeatures(fields_of(frame)).fit(frame).transform(frame)
    assert out["rainy_season"].isna().tolist() == [False, True, True, False]
    assert out["rainy_season"].tolist()[0] == 1.0 and out["rainy_season"].tolist()[3] == 1.0
    np.testing.assert_allclose(out["days_since_previous_survey"],
                               [1 - 3 / 24, np.nan, np.nan, 1 + (4.5 + 0.25 / 3600) / 24])


def test_a_model_trained_without_dates_scores_dated_rows_and_vice_versa(
        households: pd.DataFrame, labels: np.ndarray) -> None:
    fields = fields_of(households)
    undated = build_model_pipeline(HistGradientBoostingClassifier(max_iter=10), households, scale=False, fields=fields)
    undated.fit(households, labels)  # all-missing temporal columns: imputed with 0, indicator 1
    rows = dated(households, ["2024-04-15T10:00:00+03:00", None], ["2024-01-15T10:00:00+03:00", None])
    assert undated.predict_proba(rows).shape == (2, 2)
    train = households.copy()
    train["collected_at"] = pd.Timestamp("2024-01-10", tz="Africa/Kampala") + pd.to_timedelta(
        np.arange(len(train)) % 300, unit="D")
    train["previous_collected_at"] = train["collected_at"] - pd.Timedelta(days=365)
    with_dates = build_model_pipeline(LogisticRegression(max_iter=300), train, fields=fields).fit(train, labels)
    assert with_dates.predict_proba(households.head(3)).shape == (3, 2)  # no dates at serving: imputed
    names = list(with_dates.named_steps["pre"].get_feature_names_out())
    assert set(TEMPORAL_FEATURES) <= set(names)


# --- leak guard --------------------------------------------------------------------------------

REFUSED = [f.name for f in contract.ALL_FIELDS
           if f.role not in contract.MODEL_INPUT_ROLES and f.name not in TEMPORAL_INPUTS]


def test_the_collection_dates_are_the_only_temporal_inputs() -> None:
    assert TEMPORAL_INPUTS == ("collected_at", "previous_collected_at")


@pytest.mark.parametrize("field", REFUSED)
def test_every_non_feature_contract_field_is_still_refused(field: str) -> None:
    with pytest.raises(LeakageError, match=field):
        assert_leak_free(["household_size", *TEMPORAL_INPUTS, field])
    with pytest.raises(LeakageError):
        SurveyFeatures(fields=["household_size", field]).fit(pd.DataFrame({"household_size": [1], field: [1]}))


def test_the_collection_dates_are_accepted_explicitly() -> None:
    assert_leak_free(["household_size", "district", *TEMPORAL_INPUTS])
    assert contract.FIELDS_BY_NAME["collected_at"].role == "metadata"  # an exception, not a feature
    frame = pd.DataFrame({"household_size": [3], "collected_at": [pd.Timestamp("2024-04-01", tz="UTC")],
                          "previous_collected_at": [pd.NaT]})
    out = SurveyFeatures(fields=["household_size", *TEMPORAL_INPUTS]).fit(frame).transform(frame)
    assert "collected_at" not in out and out.loc[0, "rainy_season"] == 1.0
    with pytest.raises(LeakageError, match="collected_at_utc"):
        assert_leak_free(["collected_at_utc"])  # unknown names are refused, however close


# --- output names and their sources ------------------------------------------------------------

def test_output_names_are_sklearns_and_map_back_to_fields(households: pd.DataFrame, labels: np.ndarray) -> None:
    fields = fields_of(households)
    pipe = build_model_pipeline(LogisticRegression(max_iter=300), households, fields=fields).fit(households, labels)
    pre = pipe.named_steps["pre"]
    names = list(pre.get_feature_names_out())
    features = pipe.named_steps["features"].transform(households)
    plain = ColumnTransformer(pre.transformers, verbose_feature_names_out=False).fit(features, labels)
    assert names == list(plain.get_feature_names_out())
    assert {"household_size", "missingindicator_rainy_season", "district_Kanungu", "loan_from_97",
            "loan_from_missing", "village", "cluster", "land_per_member", "rainy_season"} <= set(names)
    assert len(names) == pipe[:-1].transform(households.head(2)).shape[1]
    sources = feature_sources(names)
    assert set(sources) <= set(fields) | set(DERIVED_FEATURES)
    assert sources[names.index("district_Kanungu")] == "district"
    assert sources[names.index("missingindicator_rainy_season")] == "rainy_season"


@pytest.mark.parametrize(("name", "source"), [
    ("household_size", "household_size"),
    ("missingindicator_household_size", "household_size"),
    ("district_Kanungu", "district"),
    ("district_missing", "district"),
    ("loan_from_97", "loan_from"),
    ("loan_from_missing", "loan_from"),
    ("food_banana_wilt_diseases_3", "food_banana_wilt_diseases"),
    ("village", "village"),
    ("village_on track", "village"),  # multi-class target encoding: <field>_<class>
    ("cluster", "cluster"),
    ("phones_owned", "phones_owned"),
    ("land_per_member", "land_per_member"),
    ("missingindicator_days_since_previous_survey", "days_since_previous_survey"),
    ("collected_month_sin", "collected_month_sin"),
])
def test_feature_sources(name: str, source: str) -> None:
    assert feature_sources([name]) == [source]


def test_an_unknown_name_has_no_source() -> None:
    with pytest.raises(ValueError, match="x0"):
        feature_sources(["household_size", "x0"])
