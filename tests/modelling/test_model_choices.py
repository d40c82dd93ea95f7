"""What training feeds its candidates: the fields (no village), the sample weights (by distance of the
status from the vulnerability line) and a LightGBM whose trees still fit exact TreeSHAP tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
from django.conf import settings
from sklearn.base import clone

from features.pipeline import assert_leak_free, build_model_pipeline, input_fields
from ingestion.synthetic.generator import generate
from modelling.services import NOT_MODEL_INPUTS, candidates, model_fields, status_weights
from modelling.treeshap import TreeTables

STATUSES = ["On Track", "At Risk", "Struggling", "Severely Struggling"]  # best first, as settings order them
VULNERABLE = ("Struggling", "Severely Struggling")


def test_the_village_is_not_a_model_input_but_cluster_and_district_are() -> None:
    fields = model_fields(input_fields())
    assert "village" in input_fields() and "village" in NOT_MODEL_INPUTS
    assert "village" not in fields
    assert {"district", "cluster", "household_size", "business_number"} <= set(fields)
    assert_leak_free(fields)


def test_model_fields_keeps_only_the_columns_present_in_contract_order() -> None:
    columns = ["business_number", "village", "household_size", "income_consumption_residues_per_day", "district"]
    assert model_fields(columns) == [f for f in input_fields() if f in {"business_number", "household_size", "district"}]


def test_status_weights_weigh_the_statuses_far_from_the_vulnerability_line() -> None:
    status = np.array(["On Track", "At Risk", "Struggling", "Severely Struggling", "unknown"], dtype=object)
    assert status_weights(status, STATUSES, VULNERABLE, far=2.0).tolist() == [2.0, 1.0, 1.0, 2.0, 1.0]
    assert status_weights(status, STATUSES, VULNERABLE, far=1.0).tolist() == [1.0] * 5
    # The settings' own statuses give the same weights.
    ordered = [name for name, _ in settings.RTV_STATUS_THRESHOLDS] + [settings.RTV_STATUS_FLOOR]
    assert ordered == STATUSES
    assert tuple(settings.RTV_VULNERABLE_STATUSES) == VULNERABLE


def test_status_weights_follow_where_the_line_is() -> None:
    # Only the worst status vulnerable: the line sits between Struggling and Severely Struggling.
    status = np.array(STATUSES, dtype=object)
    assert status_weights(status, STATUSES, ("Severely Struggling",), far=3.0).tolist() == [3.0, 3.0, 1.0, 1.0]


def test_the_lightgbm_candidate_keeps_exact_treeshap_tables() -> None:
    data, _ = generate(1500, seed=4, bad_rate=0.0)
    y = (data["income_consumption_residues_per_day"] < 1.77).to_numpy().astype(int)
    status = np.where(y == 1, "Struggling", "On Track")
    fields = model_fields(data.columns)
    lgbm = next(c for c in candidates() if c.name == "lightgbm")
    pipe = build_model_pipeline(clone(lgbm.estimator), data, scale=lgbm.scale, fields=fields)
    pipe.fit(data, y, model__sample_weight=status_weights(status, STATUSES, VULNERABLE))
    booster = pipe[-1].booster_
    assert TreeTables.supports(booster)
    Xt = np.asarray(pipe[:-1].transform(data.head(300)), dtype="float64")
    ours = TreeTables.from_booster(booster).contributions(Xt)
    assert np.abs(np.asarray(ours) - booster.predict(Xt, pred_contrib=True)).max() < 1e-9
    assert "village" not in set(pd.Index(pipe[-2].get_feature_names_out()))
