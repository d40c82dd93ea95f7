"""The straightforward feature code the fast path must reproduce: ``SurveyFeatures.transform`` as it
was written first (pandas, column by column), kept verbatim as the specification."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from features.pipeline import ASSET_FIELDS, FARMING_FLAGS, HIGH_CARDINALITY, LOW_CARDINALITY, WASH_FLAGS
from rtv import contract


def reference_features(X: pd.DataFrame, fields: Sequence[str]) -> pd.DataFrame:
    specs = contract.FIELDS_BY_NAME
    out: dict[str, pd.Series | np.ndarray] = {}
    index = X.index
    for name in fields:
        spec = specs[name]
        col = X[name] if name in X else pd.Series(np.nan, index=index)
        if name in LOW_CARDINALITY or name in HIGH_CARDINALITY:
            out[name] = col.astype(object).where(col.notna(), "missing").astype(str)
        elif spec.type == "multiselect":
            text = col.astype(object).where(col.notna(), "").astype(str)
            tokens = " " + text.str.replace(r"\s+", " ", regex=True) + " "
            for code in spec.allowed:
                out[f"{name}_{code}"] = tokens.str.contains(f" {code} ", regex=False).astype("float64")
            out[f"{name}_missing"] = (text == "").astype("float64")
        elif spec.type in ("integer", "decimal", "code"):
            values = pd.to_numeric(col, errors="coerce").astype("float64")
            if spec.sentinels:
                values = values.mask(values.isin(list(spec.sentinels)))
            out[name] = values
    frame = pd.DataFrame(out, index=index)
    size = frame.get("household_size")
    if size is not None:
        if "agriculture_land" in frame:
            frame["land_per_member"] = frame["agriculture_land"] / size.clip(lower=1)
        crops = [c for c in ("season1_crops_planted", "season2_crops_planted", "perennial_crops_grown") if c in frame]
        frame["crop_diversity"] = frame[crops].sum(axis=1, min_count=1)
    wash = [c for c in WASH_FLAGS if c in frame]
    if wash:
        frame["wash_index"] = frame[wash].mean(axis=1)
    farming = [c for c in FARMING_FLAGS if c in frame]
    if farming:
        frame["farming_index"] = frame[farming].mean(axis=1)
    if "household_fertilizer" in frame:
        frame["uses_fertilizer"] = frame["household_fertilizer"].isin([1, 2, 3]).astype("float64")
    assets = [c for c in ASSET_FIELDS if c in frame]
    if assets:
        frame["asset_index"] = (frame[assets] > 0).astype("float64").where(frame[assets].notna()).mean(axis=1)
    return frame


class ReferenceFeatures(TransformerMixin, BaseEstimator):
    """``reference_features`` as a pipeline step: the feature step as it was first written."""

    def __init__(self, fields: Sequence[str]) -> None:
        self.fields = fields

    def fit(self, X: pd.DataFrame, y: object = None) -> ReferenceFeatures:
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return reference_features(X, self.fields)
