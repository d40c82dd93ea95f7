"""Explanations are exact: TreeSHAP tables equal LightGBM's own pred_contrib, linear contributions are
coefficient x (standardised value - its mean), and every model's reasons add up to its log-odds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lightgbm import LGBMClassifier
from sklearn.linear_model import LogisticRegression

from features.pipeline import build_model_pipeline, input_fields
from ingestion.synthetic.generator import generate
from modelling.scoring import HouseholdModel, combine_status, conformal_quantile, feature_source
from modelling.services import LeakageError, leakage_alarm
from modelling.treeshap import TreeTables


def _trees(objective_classes: int = 2, missing: bool = True) -> tuple[LGBMClassifier, np.ndarray]:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 12))
    if missing:
        X[rng.random(X.shape) < 0.08] = np.nan
    X[:, 4] = rng.integers(0, 3, 3000)  # many exact zeros
    score = np.nan_to_num(X[:, 0]) + (X[:, 4] == 0) - np.nan_to_num(X[:, 1]) * 0.5
    y = (score > 0.3).astype(int) if objective_classes == 2 else np.digitize(score, [-0.5, 0.3, 1.0])
    model = LGBMClassifier(n_estimators=40, num_leaves=8, max_depth=3, min_child_samples=20, subsample=0.8,
                           subsample_freq=1, verbose=-1, n_jobs=1).fit(X, y)
    return model, X


def test_treeshap_tables_equal_lightgbms_pred_contrib_to_1e_9() -> None:
    model, X = _trees()
    tables = TreeTables.from_booster(model.booster_)
    ours, raw = tables.contributions(X, with_raw=True)  # type: ignore[misc]
    theirs = model.booster_.predict(X, pred_contrib=True)
    assert np.abs(ours - theirs).max() < 1e-9
    assert np.abs(raw - model.booster_.predict(X, raw_score=True)).max() < 1e-9
    assert np.abs(ours.sum(axis=1) - raw).max() < 1e-9  # local accuracy: the parts add up to the score


def test_treeshap_tables_follow_lightgbms_zero_as_missing_rule() -> None:
    rng = np.random.default_rng(4)
    X = rng.integers(0, 3, size=(2000, 5)).astype(float)
    y = ((X[:, 0] == 0) | (X[:, 1] > 1)).astype(int)
    model = LGBMClassifier(n_estimators=20, num_leaves=8, max_depth=3, zero_as_missing=True, verbose=-1,
                           n_jobs=1).fit(X, y)
    tables = TreeTables.from_booster(model.booster_)
    assert np.abs(tables.contributions(X) - model.booster_.predict(X, pred_contrib=True)).max() < 1e-9


def test_multiclass_raw_scores_from_tables_equal_lightgbms() -> None:
    model, X = _trees(objective_classes=4)
    tables = TreeTables.from_booster(model.booster_)
    assert np.abs(tables.raw(X) - model.booster_.predict(X, raw_score=True)).max() < 1e-9


@pytest.fixture(scope="module")
def survey() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    data, _ = generate(600, seed=8, bad_rate=0.0)
    status = np.where(data["income_consumption_residues_per_day"] < 1.25, "Severely Struggling",
                      np.where(data["income_consumption_residues_per_day"] < 1.77, "Struggling",
                               np.where(data["income_consumption_residues_per_day"] < 2.15, "At Risk", "On Track")))
    y = np.isin(status, ["Struggling", "Severely Struggling"]).astype(int)
    return data, y, status


def _household_model(estimator, survey, scale: bool) -> HouseholdModel:  # type: ignore[no-untyped-def]
    data, y, status = survey
    fields = [f for f in input_fields() if f in data.columns]
    binary = build_model_pipeline(estimator, data, scale=scale, fields=fields).fit(data, y)
    twin = build_model_pipeline(LGBMClassifier(n_estimators=20, max_depth=3, num_leaves=8, verbose=-1, n_jobs=1)
                                if not scale else LogisticRegression(max_iter=500), data, scale=scale, fields=fields)
    twin.set_params(pre__target__target_type="multiclass")
    return HouseholdModel(binary=binary, slope=0.9, intercept=-0.1, status_model=twin.fit(data, status),
                          statuses=("On Track", "At Risk", "Struggling", "Severely Struggling"),
                          vulnerable_statuses=("Struggling", "Severely Struggling"), conformal_q=0.7).prepare(data)


@pytest.mark.parametrize(("estimator", "scale"), [
    (LogisticRegression(C=0.5, max_iter=2000), True),
    (LGBMClassifier(n_estimators=60, max_depth=3, num_leaves=8, verbose=-1, n_jobs=1), False),
], ids=["linear", "trees"])
def test_reasons_add_up_to_the_calibrated_log_odds(estimator, survey, scale: bool) -> None:  # type: ignore[no-untyped-def]
    model = _household_model(estimator, survey, scale)
    data = survey[0].head(200)
    _, Xt = model._transform(data)
    contrib, base = model.contributions(Xt)
    p = model.predict_proba(data)[:, 1]
    assert np.abs(base + contrib.sum(axis=1) - np.log(p / (1 - p))).max() < 1e-8
    # Grouped by survey question: no engineered column name leaks into a reason.
    assert all(feature_source(s) == s for s in model.sources_)
    scores = model.score(data)
    assert np.allclose(scores.p_vulnerable, p)
    reasons = scores.reasons(0)
    assert 1 <= len(reasons) <= 5
    assert [abs(r["contribution"]) for r in reasons] == sorted((abs(r["contribution"]) for r in reasons), reverse=True)
    first = reasons[0]
    assert set(first) == {"feature", "label", "value", "contribution", "direction", "text"}
    assert first["direction"] == ("increases_vulnerability" if first["contribution"] > 0 else "decreases_vulnerability")
    assert ("raises" if first["contribution"] > 0 else "lowers") in first["text"]


def test_linear_contributions_are_coefficient_times_centred_standardised_value(survey) -> None:  # type: ignore[no-untyped-def]
    model = _household_model(LogisticRegression(C=0.5, max_iter=2000), survey, scale=True)
    data = survey[0].head(50)
    _, Xt = model._transform(data)
    coef = model.binary[-1].coef_.ravel()
    expected_columns = (Xt - model.column_mean_) * coef * model.slope
    grouped = np.zeros((len(Xt), len(model.sources_)))
    for column, source in enumerate(model.source_index_):
        grouped[:, source] += expected_columns[:, column]
    assert np.allclose(model.contributions(Xt)[0], grouped)


def test_status_probabilities_agree_with_the_vulnerable_probability(survey) -> None:  # type: ignore[no-untyped-def]
    model = _household_model(LGBMClassifier(n_estimators=30, max_depth=3, num_leaves=8, verbose=-1, n_jobs=1),
                             survey, scale=False)
    scores = model.score(survey[0].head(300))
    vulnerable = [s in model.vulnerable_statuses for s in scores.statuses]
    assert np.allclose(scores.status_proba.sum(axis=1), 1)
    assert np.allclose(scores.status_proba[:, vulnerable].sum(axis=1), scores.p_vulnerable)
    # The predicted status is on the same side of the threshold as the flag.
    assert all((s in model.vulnerable_statuses) == f for s, f in zip(scores.predicted_status,
                                                                        scores.predicted_vulnerable, strict=True))
    assert np.array_equal(scores.borderline, np.abs(scores.p_vulnerable - 0.5) < 0.1)
    assert scores.in_set.any(axis=1).all()  # never an empty prediction set
    # However narrow the sets (a small conformal quantile), the status answered is in its set.
    model.conformal_q = 0.05
    narrow = model.score(survey[0].head(300))
    answered = np.array([narrow.statuses.index(s) for s in narrow.predicted_status])
    assert (answered != narrow.status_proba.argmax(axis=1)).any()  # the case that matters occurs here
    assert narrow.in_set[np.arange(len(answered)), answered].all()


def test_combined_statuses_split_the_vulnerable_mass_by_the_twins_odds() -> None:
    p4 = np.array([[0.4, 0.2, 0.3, 0.1]])
    out = combine_status(p4, np.array([0.8]), np.array([False, False, True, True]))
    assert np.allclose(out, [[0.2 * 4 / 6, 0.2 * 2 / 6, 0.8 * 0.75, 0.8 * 0.25]])


def test_conformal_sets_cover_at_least_one_minus_alpha_of_calibration_rows() -> None:
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(4), size=2000)
    truth = np.array([rng.choice(4, p=row) for row in proba])
    q = conformal_quantile(proba, truth, alpha=0.1)
    covered = proba[np.arange(len(truth)), truth] >= 1 - q
    assert covered.mean() >= 0.9


def test_the_leakage_alarm_blocks_a_money_column_among_the_top_features() -> None:
    leakage_alarm({"accuracy": 0.7, "model_top_features": ["household_size", "agriculture_land"]})
    with pytest.raises(LeakageError, match="household_income"):
        leakage_alarm({"accuracy": 0.7, "model_top_features": ["household_size", "household_income"]})
    with pytest.raises(LeakageError, match="accuracy"):
        leakage_alarm({"accuracy": 0.97, "model_top_features": []})


def test_the_table_path_and_lightgbms_own_walk_give_the_same_answers(survey) -> None:  # type: ignore[no-untyped-def]
    model = _household_model(LGBMClassifier(n_estimators=60, max_depth=3, num_leaves=8, verbose=-1, n_jobs=1),
                             survey, scale=False)
    assert model.tables_ is not None and model.status_tables_ is not None
    data = survey[0].head(400)  # above TABLES_FROM_ROWS: tables
    whole = model.score(data)
    parts = [model.score(data.iloc[i:i + 20].reset_index(drop=True)) for i in range(0, 400, 20)]  # LightGBM's walk
    assert np.allclose(whole.p_vulnerable, np.concatenate([p.p_vulnerable for p in parts]), atol=1e-12)
    assert np.allclose(whole.status_proba, np.concatenate([p.status_proba for p in parts]), atol=1e-12)
    assert np.allclose(whole.reason_contribution, np.concatenate([p.reason_contribution for p in parts]), atol=1e-9)


def test_stored_json_is_the_same_whether_built_row_by_row_or_column_wise(survey) -> None:  # type: ignore[no-untyped-def]
    import json

    import pandas as pd

    from modelling.models import ModelVersion
    from modelling.serving import SMALL_BATCH, scores_frame

    model = _household_model(LGBMClassifier(n_estimators=40, max_depth=3, num_leaves=8, verbose=-1, n_jobs=1),
                             survey, scale=False)
    data = survey[0].head(SMALL_BATCH * 2)
    scores = model.score(data)
    now = pd.Timestamp("2026-11-26T08:00:00Z")
    common = {"mv": ModelVersion(pk=1), "variant": "champion", "experiment": None, "now": now}
    n = len(data)
    wide = scores_frame(scores, household_ids=[None] * n, record_ids=[None] * n, buckets=[None] * n, **common)
    for i in range(0, n, 16):
        part = model.score(data.iloc[i:i + 16].reset_index(drop=True))
        small = scores_frame(part, household_ids=[None] * 16, record_ids=[None] * 16, buckets=[None] * 16, **common)
        for column in ("status_probabilities", "prediction_set", "reasons"):
            for a, b in zip(wide[column].iloc[i:i + 16], small[column], strict=True):
                left, right = json.loads(a), json.loads(b)
                if column == "reasons":
                    left = [r for r in left if r[2] != 0]
                    assert [r[:2] for r in left] == [r[:2] for r in right]
                    assert np.allclose([r[2] for r in left], [r[2] for r in right], atol=1e-3)
                elif column == "status_probabilities":
                    assert left.keys() == right.keys() and np.allclose(list(left.values()), list(right.values()), atol=1e-5)
                else:
                    assert left == right
