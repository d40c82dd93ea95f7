"""The fast feature path computes exactly what the straightforward one does.

``SurveyFeatures`` is checked against the original pandas implementation (``reference.py``), and
``FastColumnTransformer.transform`` against ``ColumnTransformer.transform`` on the same fitted state,
on generated households and on deliberately messy rows (text numbers, sentinels, odd spacing in
multi-select codes, unseen villages, mixed Python types as they come out of JSON).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from features.pipeline import (
    TEMPORAL_FEATURES,
    FastColumnTransformer,
    SurveyFeatures,
    build_model_pipeline,
    build_preprocessor,
    input_fields,
)
from ingestion.synthetic.generator import generate

from .reference import ReferenceFeatures, reference_features


@pytest.fixture(scope="module")
def households() -> pd.DataFrame:
    data, _ = generate(3000, seed=11)
    return data


def fields_of(frame: pd.DataFrame) -> list[str]:
    return [f for f in input_fields() if f in frame.columns]


def messy(data: pd.DataFrame) -> pd.DataFrame:
    """The same households as plain Python objects (as read back from JSON), plus awkward values."""
    frame = data.astype(object).where(data.notna(), None).reset_index(drop=True)
    odd = {
        "loan_from": ["7 8", 7, 7.0, None, "", "  ", "97\t1", " 1\u00a02 ", "x 3", "99", "07", "8 8"],
        "food_banana_wilt_diseases": ["1", "2 3", None, "3  1", 3, "", "1.0", "4", "2", " ", "1 2 3", "x"],
        "business_number": ["3", "x", 2, None, "2.5", "", "-1", 4.0, "1e1", "0", "7", " 5 "],
        "phones_owned": [-99, "-99", 2, None, "3", "lots", -99.0, 1, 0, 5, "2", 3],
        "household_size": [0, 1, "4", None, 60, 3, 2, "x", 5, 6, 7, 8],
        "district": ["Kampala", None, "Kanungu", 3, "", "Rubanda", "Mitooma", None, "Rukungiri", "x", "Kanungu", "y"],
        "village": ["never-seen", None, 5, "", *data["village"].head(8).tolist()],
        "household_fertilizer": [1, 2, 3, 99, None, "1", "2", 0, 4, 3.0, "x", 1],
    }
    for column, values in odd.items():
        frame.loc[: len(values) - 1, column] = pd.Series(values, dtype=object)
    return frame


def test_features_match_the_reference_on_generated_households(households: pd.DataFrame) -> None:
    fields = fields_of(households)
    fast = SurveyFeatures(fields).fit(households).transform(households)
    expected = reference_features(households, fields)
    assert list(fast.columns) == [*expected.columns, *TEMPORAL_FEATURES]
    pd.testing.assert_frame_equal(fast[expected.columns], expected, check_dtype=False, atol=1e-9)


@pytest.mark.parametrize("rows", [400, 12])  # large batches are factorised first, small ones are not
def test_features_match_the_reference_on_messy_python_values(households: pd.DataFrame, rows: int) -> None:
    frame = messy(households.head(rows))
    fields = fields_of(frame)
    fast = SurveyFeatures(fields).fit(frame).transform(frame)
    expected = reference_features(frame, fields)
    pd.testing.assert_frame_equal(fast[expected.columns], expected, check_dtype=False, atol=1e-9)
    # The awkward multi-select values, spelled out: codes are whitespace-separated tokens.
    assert fast.loc[:7, "loan_from_7"].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]  # 7.0 reads "7.0": not code 7
    assert fast.loc[:7, "loan_from_1"].tolist() == [0, 0, 0, 0, 0, 0, 1, 1]  # tab and no-break space split
    assert fast.loc[:7, "loan_from_missing"].tolist() == [0, 0, 0, 1, 1, 0, 0, 0]  # "  " is not missing


def test_missing_fields_and_an_empty_frame_give_the_same_columns(households: pd.DataFrame) -> None:
    fields = fields_of(households)
    features = SurveyFeatures(fields).fit(households)
    full = features.transform(households.head(5))
    partial = households.head(5).drop(columns=["loan_from", "village", "household_size"])
    pd.testing.assert_frame_equal(features.transform(partial)[reference_features(partial, fields).columns],
                                  reference_features(partial, fields), check_dtype=False)
    assert list(features.transform(partial).columns) == list(full.columns)
    assert list(features.transform(households.head(0)).columns) == list(full.columns)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("scale", [True, False])
def test_fast_transform_equals_column_transformer_on_the_same_fitted_state(
        households: pd.DataFrame, labels: np.ndarray, scale: bool) -> None:
    fields = fields_of(households)
    pipe = build_model_pipeline(LogisticRegression(max_iter=200), households, scale=scale, fields=fields)
    pipe.fit(households.head(2000), labels[:2000])
    pre = pipe.named_steps["pre"]
    assert isinstance(pre, FastColumnTransformer)
    for frame in (households.tail(1000), messy(households.tail(300)), messy(households.tail(20)), households.head(1)):
        features = pipe.named_steps["features"].transform(frame)
        assert list(features.columns) == list(pipe.named_steps["features"].get_feature_names_out())
        fast = pre.transform(features)
        slow = ColumnTransformer.transform(pre, features)
        assert fast.shape == slow.shape
        np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-9)
        assert np.array_equal(fast, slow)  # in fact bit for bit


def test_multiclass_target_encoding_takes_the_fast_path_too(households: pd.DataFrame) -> None:
    fields = fields_of(households)
    status = np.array(["a", "b", "c"])[np.arange(len(households)) % 3]
    twin = build_model_pipeline(LogisticRegression(max_iter=200), households, fields=fields)
    twin.set_params(pre__target__target_type="multiclass")  # as modelling.services does
    twin.fit(households, status)
    pre = twin.named_steps["pre"]
    features = twin.named_steps["features"].transform(messy(households.tail(300)))
    assert np.array_equal(pre.transform(features), ColumnTransformer.transform(pre, features))
    assert {"village_a", "village_c", "cluster_b"} <= set(pre.get_feature_names_out())


def test_fit_transform_is_sklearns_out_of_fold_target_encoding(households: pd.DataFrame, labels: np.ndarray) -> None:
    fields = fields_of(households)
    features = SurveyFeatures(fields).fit(households).transform(households)
    fast = build_model_pipeline(LogisticRegression(), households, fields=fields).named_steps["pre"]
    plain = ColumnTransformer(fast.transformers, verbose_feature_names_out=False)
    cross_fitted = fast.fit_transform(features, labels)
    assert np.array_equal(cross_fitted, plain.fit_transform(features, labels))
    village = list(fast.get_feature_names_out()).index("village")
    # Out of fold: the training rows' encodings differ from what the fitted encoder gives them.
    assert not np.allclose(cross_fitted[:, village], fast.transform(features)[:, village])


@pytest.mark.filterwarnings("ignore:Skipping features without any observed values")
def test_other_configurations_fall_back_to_sklearn(households: pd.DataFrame, labels: np.ndarray) -> None:
    fields = fields_of(households)
    pipe = build_model_pipeline(LogisticRegression(max_iter=200), households, fields=fields)
    pipe.set_params(pre__num__simpleimputer__keep_empty_features=False, pre__onehot__handle_unknown="error")
    pipe.fit(households, labels)
    features = pipe.named_steps["features"].transform(households.head(50))
    assert pipe.named_steps["pre"]._fast_transform(features) is None
    assert np.array_equal(pipe.named_steps["pre"].transform(features),
                          ColumnTransformer.transform(pipe.named_steps["pre"], features))


def test_one_row_is_transformed_like_the_same_row_in_a_batch(households: pd.DataFrame, labels: np.ndarray) -> None:
    fields = fields_of(households)
    pipe = build_model_pipeline(LogisticRegression(max_iter=200), households, fields=fields)
    pipe.fit(households, labels)
    batch = pipe[:-1].transform(households.head(20))
    for i in (0, 7, 19):
        assert np.array_equal(pipe[:-1].transform(households.iloc[[i]])[0], batch[i])


def test_the_fitted_pipeline_round_trips_through_skops(households: pd.DataFrame, labels: np.ndarray) -> None:
    skops_io = pytest.importorskip("skops.io")
    fields = fields_of(households)
    pipe = build_model_pipeline(LogisticRegression(max_iter=200), households, fields=fields).fit(households, labels)
    blob = skops_io.dumps(pipe)
    untrusted = skops_io.get_untrusted_types(data=blob)
    assert all(t.startswith(("sklearn.", "numpy.", "builtins.", "features.", "collections.")) for t in untrusted)
    loaded = skops_io.loads(blob, trusted=untrusted)
    assert np.array_equal(loaded[:-1].transform(households.head(100)), pipe[:-1].transform(households.head(100)))


@pytest.mark.parametrize("scale", [True, False])
def test_the_whole_feature_pipeline_equals_the_original_one(
        households: pd.DataFrame, labels: np.ndarray, scale: bool) -> None:
    """The original pipeline (reference features + plain ColumnTransformer), fitted on the same rows,
    gives the same numbers for every column it has; the new pipeline only adds the temporal ones."""
    fields = fields_of(households)
    train, test = households.head(2000), messy(households.tail(500))
    new = build_model_pipeline(LogisticRegression(), households, scale=scale, fields=fields)[:-1]
    pre = build_preprocessor(reference_features(households, fields), scale=scale)
    old = Pipeline([("features", ReferenceFeatures(fields)),
                    ("pre", ColumnTransformer(pre.transformers, verbose_feature_names_out=False))])
    fitted_new, fitted_old = new.fit_transform(train, labels[:2000]), old.fit_transform(train, labels[:2000])
    new_names = list(new.get_feature_names_out())
    old_names = list(old.named_steps["pre"].get_feature_names_out())
    assert [n for n in new_names if n in old_names] == old_names
    assert set(new_names) - set(old_names) == {
        *TEMPORAL_FEATURES, *(f"missingindicator_{t}" for t in TEMPORAL_FEATURES)}
    same = [new_names.index(n) for n in old_names]
    assert np.array_equal(fitted_new[:, same], fitted_old)  # out-of-fold target encoding included
    np.testing.assert_allclose(new.transform(test)[:, same], old.transform(test), rtol=0, atol=1e-9)


@pytest.mark.parametrize("rows", [1, 12, 400])  # a few rows are read as one object array, more by column
def test_feature_arrays_are_the_transform_without_the_frame(households: pd.DataFrame, labels: np.ndarray,
                                                          rows: int) -> None:
    """Serving hands ``SurveyFeatures.arrays`` straight to the preprocessor: the same numbers, bit for
    bit, as the DataFrame path, for typed rows and for messy Python values."""
    fields = fields_of(households)
    pipe = build_model_pipeline(LogisticRegression(max_iter=200), households, fields=fields)
    pipe.fit(households.head(2000), labels[:2000])
    features, pre = pipe.named_steps["features"], pipe.named_steps["pre"]
    for frame in (households.tail(rows), messy(households.tail(max(rows, 12))).head(rows)):
        arrays = features.arrays(frame)
        expected = reference_features(frame, fields)
        pd.testing.assert_frame_equal(arrays.frame()[expected.columns], expected, check_dtype=False, atol=1e-9)
        pd.testing.assert_frame_equal(arrays.frame(), features.transform(frame))
        assert np.array_equal(pre.transform(arrays), pre.transform(arrays.frame()))
        assert np.array_equal(pre.transform(arrays), ColumnTransformer.transform(pre, arrays.frame()))
        assert set(arrays.columns) == {c for c in arrays.columns if c in arrays}
        pd.testing.assert_series_equal(arrays["land_per_member"], arrays.frame()["land_per_member"])
        pd.testing.assert_series_equal(arrays["village"], arrays.frame()["village"])


@pytest.mark.parametrize("rows", [1, 100])  # a few rows are imputed as one block, more feature by feature
def test_infinity_is_refused_as_sklearn_refuses_it(households: pd.DataFrame, labels: np.ndarray, rows: int) -> None:
    fields = fields_of(households)
    pipe = build_model_pipeline(LogisticRegression(max_iter=200), households, fields=fields)
    pipe.fit(households.head(2000), labels[:2000])
    features = pipe.named_steps["features"].transform(households.head(rows))
    features.loc[features.index[-1], "household_size"] = np.inf
    pre = pipe.named_steps["pre"]
    assert pre._fast_transform(features) is None
    with pytest.raises(ValueError, match="infinity"):
        pre.transform(features)
    with pytest.raises(ValueError, match="infinity"):
        ColumnTransformer.transform(pre, features)


def test_rows_without_any_date_have_missing_temporal_features(households: pd.DataFrame) -> None:
    """An undated payload's typed frame carries collected_at as missing objects: the same features
    as no date column at all, and as missing dates parsed the long way."""
    fields = fields_of(households)
    features = SurveyFeatures(fields).fit(households)
    rows = households.head(3)
    absent = features.transform(rows)
    for missing in ([pd.NaT] * 3, [None, pd.NaT, float("nan")], pd.Series([pd.NaT] * 3, dtype="datetime64[ns, UTC]")):
        undated = features.transform(rows.assign(collected_at=pd.Series(list(missing) if isinstance(missing, list)
                                                                         else missing.tolist(), index=rows.index,
                                                                         dtype=object)))
        pd.testing.assert_frame_equal(undated, absent)
    assert absent[list(TEMPORAL_FEATURES)].isna().all().all()


def test_the_asset_index_is_the_share_of_assets_owned_and_older_fitted_pipelines_keep_their_columns(
        households: pd.DataFrame) -> None:
    """A model saved before the index existed was fitted on one column fewer: loaded again, its
    feature step (no ``assets_``) gives the columns its estimator knows."""
    frame = pd.DataFrame({"radios_owned": [0, 2, None, 1], "phones_owned": [1, -99, None, 0], "household_size": 4})
    step = SurveyFeatures(["radios_owned", "phones_owned", "household_size"]).fit(frame)
    assert step.transform(frame)["asset_index"].tolist()[:2] == [0.5, 1.0]  # -99 is "not answered"
    assert np.isnan(step.transform(frame)["asset_index"].iloc[2])
    fields = fields_of(households)
    older = SurveyFeatures(fields).fit(households)
    del older.assets_
    columns = list(older.get_feature_names_out())
    assert "asset_index" not in columns and columns == list(older.transform(households.head(5)).columns)
    assert columns == [c for c in SurveyFeatures(fields).fit(households).get_feature_names_out() if c != "asset_index"]
