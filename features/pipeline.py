"""Leak-free features, shared by training and serving: the fitted transformer is saved inside the
model, so serving cannot drift from training.

Only fields whose contract role is ``feature`` or ``location`` may enter.  Money, derived, label,
identifier and metadata fields are refused (``assert_leak_free``): the label is an exact sum of
the money columns, which is how public solutions reach a meaningless 95-99% accuracy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler, TargetEncoder

from rtv import contract

LOW_CARDINALITY = ("district",)
HIGH_CARDINALITY = ("cluster", "village")
WASH_FLAGS = ("latrine_constructed", "tippy_tap_available", "soap_ash_available", "standard_hangline",
              "kitchen_house", "bathroom_constructed", "swept_compound", "dish_rack_present", "non_bio_waste_mgt_present")
FARMING_FLAGS = ("perennial_cropping", "apply_liquid_manure", "soil_management", "postharvest_food_storage",
                 "water_control_practise")


class LeakageError(ValueError):
    """A field that is the label, or computes it, was offered to a model."""


def assert_leak_free(columns: Iterable[str], roles: dict[str, str] | None = None) -> None:
    """Refuse any input column whose contract role is not an allowed model input."""
    roles = roles or {f.name: f.role for f in contract.ALL_FIELDS}
    bad = sorted(c for c in columns if roles.get(c) not in contract.MODEL_INPUT_ROLES)
    if bad:
        raise LeakageError(f"fields not allowed as model inputs (role not feature/location): {', '.join(bad)}")


def input_fields(specs: Sequence[contract.FieldSpec] = contract.SURVEY_FIELDS) -> list[str]:
    """Every contract field a model may read."""
    return [f.name for f in specs if f.role in contract.MODEL_INPUT_ROLES]


class SurveyFeatures(TransformerMixin, BaseEstimator):
    """Raw typed survey values -> numeric features plus the categorical columns.

    Sentinels become missing, text counts become numbers, multi-select codes become indicator
    columns, and a few ratios and indices are derived.  Stateless: safe to share by design.
    """

    def __init__(self, fields: Sequence[str] | None = None) -> None:
        self.fields = fields

    def fit(self, X: pd.DataFrame, y: Any = None) -> SurveyFeatures:
        self.fields_ = list(self.fields) if self.fields is not None else input_fields()
        assert_leak_free(self.fields_)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        specs = contract.FIELDS_BY_NAME
        out: dict[str, pd.Series | np.ndarray] = {}
        index = X.index
        for name in self.fields_:
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
        # Derived indices: fewer, steadier signals than their many 0/1 parts.
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
        return frame


def build_preprocessor(feature_frame: pd.DataFrame, *, scale: bool = True) -> ColumnTransformer:
    low = [c for c in LOW_CARDINALITY if c in feature_frame]
    high = [c for c in HIGH_CARDINALITY if c in feature_frame]
    numeric = [c for c in feature_frame.columns if c not in low and c not in high]
    numeric_steps: list[Any] = [SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)]
    if scale:
        numeric_steps.append(StandardScaler())
    transformers: list[tuple[str, Any, list[str]]] = [("num", make_pipeline(*numeric_steps), numeric)]
    if low:
        transformers.append(("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False), low))
    if high:
        # Out-of-fold target encoding: TargetEncoder.fit_transform cross-fits internally.
        transformers.append(("target", TargetEncoder(target_type="binary", cv=KFold(5, shuffle=True, random_state=0)), high))
    return ColumnTransformer(transformers, verbose_feature_names_out=False)


def build_model_pipeline(estimator: Any, sample: pd.DataFrame, *, scale: bool = True,
                         fields: Sequence[str] | None = None) -> Pipeline:
    features = SurveyFeatures(fields)
    frame = features.fit_transform(sample)
    return Pipeline([("features", SurveyFeatures(fields)), ("pre", build_preprocessor(frame, scale=scale)),
                     ("model", estimator)])
