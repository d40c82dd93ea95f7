"""The registered model: calibrated P(vulnerable), the four statuses, confidence and exact reasons.

``HouseholdModel`` is what training registers in MLflow and serving loads.  It holds:

- the binary pipeline (features -> preprocessing -> estimator) and the sigmoid fitted on its
  out-of-fold scores, so ``predict_proba`` is calibrated;
- a four-status twin of the same algorithm; its probabilities are made consistent with the
  calibrated binary one (the two vulnerable statuses share P(vulnerable), the others the rest);
- the split-conformal quantile from out-of-fold status probabilities: a prediction set covers the
  true status with probability 1 - alpha (stack.md: a set with several statuses means "a human
  should look");
- what exact explanations need.  The calibrated log-odds are ``slope * raw + intercept`` and the raw
  score decomposes exactly: for LightGBM by TreeSHAP (``pred_contrib=True``), for the logistic
  regression as coefficient x (standardised value - its training mean).  Contributions of the
  transformed columns are summed per source field, so a reason names a survey question.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from features.pipeline import FastColumnTransformer, FeatureArrays, survey_months
from rtv import contract

from .treeshap import TreeTables

# LightGBM 4.6 records generated feature names even when fitted on arrays, and scikit-learn then
# warns on every array it predicts: noise, not a mismatch (the pipeline always hands it arrays).
warnings.filterwarnings("ignore", message="X does not have valid feature names, but LGBMClassifier")

# The tables pay a few numpy calls per tree: for a handful of rows LightGBM's own C++ walk is faster,
# from a few hundred rows on the tables are (same values either way: tests/modelling/test_explanations.py).
TABLES_FROM_ROWS = 256

DERIVED_LABELS = {
    "collected_month": "Month of the survey",
    "land_per_member": "Farm land per household member",
    "crop_diversity": "Number of crops grown",
    "wash_index": "Share of hygiene and sanitation practices in place",
    "farming_index": "Share of improved farming practices in use",
    "asset_index": "Share of the surveyed assets (radio, phone) the household owns",
    "uses_fertilizer": "Uses fertilizer",
    "collected_month_sin": "Month of the survey",
    "collected_month_cos": "Month of the survey",
    "rainy_season": "Surveyed in a rainy season",
    "days_since_previous_survey": "Days since the household's previous survey",
}
MONTH_PARTS = {"collected_month_sin": "collected_month", "collected_month_cos": "collected_month"}


def feature_source(name: str) -> str:
    """The survey field (or derived feature) a transformed column comes from."""
    for prefix in ("missingindicator_",):
        if name.startswith(prefix):
            name = name[len(prefix):]
    if name in contract.FIELDS_BY_NAME:
        return name
    if name in MONTH_PARTS:
        return MONTH_PARTS[name]
    for spec in contract.SURVEY_FIELDS:
        if spec.type == "multiselect" and name.startswith(spec.name + "_"):
            return spec.name
    if name.startswith("district_"):
        return "district"
    return name


def label_of(source: str) -> str:
    spec = contract.FIELDS_BY_NAME.get(source)
    if spec is not None and spec.description:
        return spec.description
    return DERIVED_LABELS.get(source, source.replace("_", " ").capitalize())


def _plain(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "not answered"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _json_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


@dataclass
class Scores:
    """A batch of answers, column-wise (the batch job never builds per-row objects it does not need)."""

    p_vulnerable: np.ndarray
    statuses: list[str]
    status_proba: np.ndarray  # (n, len(statuses))
    predicted_status: np.ndarray
    predicted_vulnerable: np.ndarray
    margin: np.ndarray
    borderline: np.ndarray
    in_set: np.ndarray  # (n, len(statuses)) bool: the conformal prediction set
    reason_source: np.ndarray | None = None  # (n, k) indices into ``sources``
    reason_contribution: np.ndarray | None = None  # (n, k) calibrated log-odds
    sources: list[str] | None = None
    frame: pd.DataFrame | None = None  # the scored input, for the reasons' values
    features: FeatureArrays | pd.DataFrame | None = None  # its engineered features, for derived reasons' values
    _months: pd.Series | None = None  # the survey month of each row, worked out when a reason needs it

    def __len__(self) -> int:
        return len(self.p_vulnerable)

    def reasons(self, i: int) -> list[dict[str, Any]]:
        if self.reason_source is None or self.reason_contribution is None or self.sources is None:
            return []
        out = []
        for j, c in zip(self.reason_source[i], self.reason_contribution[i], strict=True):
            if c == 0:
                continue
            source = self.sources[j]
            values = self.source_values(source)
            value: Any = None if values is None else values.iloc[i]
            out.append(reason(source, _json_value(None if value is pd.NA else value), float(c)))
        return out

    def source_values(self, source: str) -> pd.Series | None:
        """The values a reason shows for ``source``: the survey answer, the derived feature, or
        for the month features the month itself (not its sine and cosine)."""
        if source == "collected_month" and self.frame is not None:
            if self._months is None:
                self._months = survey_months(self.frame.reset_index(drop=True))
            return self._months
        if self.frame is not None and source in self.frame:
            return self.frame[source]
        if self.features is not None and source in self.features:
            return self.features[source]
        return None

    def prediction_set(self, i: int) -> list[str]:
        return [s for s, keep in zip(self.statuses, self.in_set[i], strict=True) if keep]

    def probabilities(self, i: int) -> dict[str, float]:
        return {s: round(float(p), 6) for s, p in zip(self.statuses, self.status_proba[i], strict=True)}


def reason(source: str, value: Any, contribution: float) -> dict[str, Any]:
    direction = "raises" if contribution > 0 else "lowers"
    return {"feature": source, "label": label_of(source), "value": value, "contribution": round(contribution, 4),
            "direction": "increases_vulnerability" if contribution > 0 else "decreases_vulnerability",
            "text": f"{label_of(source)}: {_plain(value)} {direction} the chance of being vulnerable"}


class HouseholdModel(ClassifierMixin, BaseEstimator):
    """Calibrated binary model + four-status twin + conformal quantile + exact explanations."""

    def __init__(self, binary: Any = None, slope: float = 1.0, intercept: float = 0.0, status_model: Any = None,
                 statuses: tuple[str, ...] = (), vulnerable_statuses: tuple[str, ...] = (),
                 conformal_q: float = 1.0, alpha: float = 0.1, threshold: float = 0.5,
                 borderline_margin: float = 0.1) -> None:
        self.binary = binary
        self.slope = slope
        self.intercept = intercept
        self.status_model = status_model
        self.statuses = statuses
        self.vulnerable_statuses = vulnerable_statuses
        self.conformal_q = conformal_q
        self.alpha = alpha
        self.threshold = threshold
        self.borderline_margin = borderline_margin

    # -- fitting the explanation metadata -------------------------------------------------
    def prepare(self, X: pd.DataFrame) -> HouseholdModel:
        """Record what explanations need from the fitted binary pipeline (call after fitting)."""
        self.classes_ = np.array([0, 1])
        names = [str(n) for n in self.binary[-2].get_feature_names_out()]
        sources = [feature_source(n) for n in names]
        self.sources_ = sorted(set(sources), key=sources.index)
        self.source_index_ = np.array([self.sources_.index(s) for s in sources], dtype=np.int64)
        est = self.binary[-1]
        self.tables_: TreeTables | None = None
        self.status_tables_: TreeTables | None = None
        if _is_lightgbm(est):
            self.explainer_ = "treeshap"
            self.column_mean_ = np.zeros(len(names))
            if TreeTables.supports(est.booster_):  # shallow trees: the same values, vectorised
                self.tables_ = TreeTables.from_booster(est.booster_)
            twin = self.status_model[-1] if self.status_model is not None else None
            if twin is not None and _is_lightgbm(twin) and TreeTables.supports(twin.booster_):
                self.status_tables_ = TreeTables.from_booster(twin.booster_)
        elif hasattr(est, "coef_"):
            self.explainer_ = "linear"
            self.column_mean_ = np.asarray(self.binary[:-1].transform(X), dtype="float64").mean(axis=0)
        else:
            raise TypeError(f"no exact explanation for {type(est).__name__}: use LightGBM or a linear model")
        return self

    def fit(self, X: Any, y: Any) -> HouseholdModel:  # the parts are fitted by training
        return self

    # -- scoring ------------------------------------------------------------------------------
    def _raw(self, Xt: np.ndarray) -> np.ndarray:
        est = self.binary[-1]
        if getattr(self, "tables_", None) is not None and len(Xt) >= TABLES_FROM_ROWS:
            return self.tables_.raw(Xt)  # type: ignore[union-attr,return-value]
        if _is_lightgbm(est):
            return np.asarray(est.booster_.predict(Xt, raw_score=True, **_threads(len(Xt))), dtype="float64")
        return np.asarray(est.decision_function(Xt), dtype="float64")

    def _transform(self, X: pd.DataFrame) -> tuple[Any, np.ndarray]:
        features = _features(self.binary[0], X)
        return features, _preprocess(self.binary, features)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        _, Xt = self._transform(X)
        p = 1 / (1 + np.exp(-(self.slope * self._raw(Xt) + self.intercept)))
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= self.threshold).astype(int)

    def contributions(self, Xt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per source field, the exact contribution to the calibrated log-odds, and the base value.
        ``base + contributions.sum(axis=1)`` equals the calibrated log-odds."""
        est = self.binary[-1]
        if self.explainer_ == "treeshap":
            if getattr(self, "tables_", None) is not None and len(Xt) >= TABLES_FROM_ROWS:
                raw = np.asarray(self.tables_.contributions(Xt))  # type: ignore[union-attr]
            else:
                raw = np.asarray(est.booster_.predict(Xt, pred_contrib=True, **_threads(len(Xt))), dtype="float64")
            columns, base = raw[:, :-1], raw[:, -1]
        else:
            coef = np.asarray(est.coef_, dtype="float64").ravel()
            columns = (Xt - self.column_mean_) * coef
            base = np.full(len(Xt), float(np.asarray(est.intercept_).ravel()[0]) + float(coef @ self.column_mean_))
        grouped = np.zeros((len(Xt), len(self.sources_)))
        np.add.at(grouped.T, self.source_index_, columns.T)
        return grouped * self.slope, base * self.slope + self.intercept

    def status_probabilities(self, X: pd.DataFrame, p: np.ndarray, features: Any = None) -> np.ndarray:
        """Four statuses, consistent with the calibrated P(vulnerable)."""
        statuses = list(self.statuses)
        p4 = np.zeros((len(p), len(statuses)))
        if features is not None or getattr(self, "status_tables_", None) is not None:
            # Both pipelines start with the same stateless feature step: reuse its output.
            features = features if features is not None else _features(self.status_model[0], X)
            Xt = _preprocess(self.status_model, features)
            if getattr(self, "status_tables_", None) is not None and len(Xt) >= TABLES_FROM_ROWS:
                raw = self.status_tables_.raw(Xt)  # type: ignore[union-attr]
                raw = np.exp(raw - raw.max(axis=1, keepdims=True))
                twin = raw / raw.sum(axis=1, keepdims=True)
            else:
                twin = _twin_proba(self.status_model[-1], Xt)
        else:
            twin = self.status_model.predict_proba(X)
        classes = [str(c) for c in self.status_model.classes_]
        for j, c in enumerate(classes):
            p4[:, statuses.index(c)] = twin[:, j]
        return combine_status(p4, p, vulnerable_mask(statuses, self.vulnerable_statuses))

    def score(self, X: pd.DataFrame, *, explain: bool = True, top: int = 5) -> Scores:
        features, Xt = self._transform(X)
        contrib: np.ndarray | None = None
        if explain:  # the contributions add up to the calibrated log-odds exactly: one pass gives both
            contrib, base = self.contributions(Xt)
            logit = base + contrib.sum(axis=1)
        else:
            logit = self.slope * self._raw(Xt) + self.intercept
        p = 1 / (1 + np.exp(-logit))
        statuses = list(self.statuses)
        proba = self.status_probabilities(X, p, features)
        vmask = vulnerable_mask(statuses, self.vulnerable_statuses)
        flagged = p >= self.threshold
        # The status is chosen inside the side of the threshold the household is on, so the two
        # answers never contradict each other.
        masked = np.where(flagged[:, None] == vmask[None, :], proba, -1.0)
        predicted = np.asarray(statuses, dtype=object)[masked.argmax(axis=1)]
        margin = np.abs(p - self.threshold)
        in_set = proba >= 1 - self.conformal_q
        in_set[np.arange(len(p)), proba.argmax(axis=1)] = True  # never an empty set
        in_set[np.arange(len(p)), masked.argmax(axis=1)] = True  # and never without the status answered
        out = Scores(p_vulnerable=p, statuses=statuses, status_proba=proba, predicted_status=predicted,
                     predicted_vulnerable=flagged, margin=margin, borderline=margin < self.borderline_margin,
                     in_set=in_set, sources=list(self.sources_), frame=X, features=features)
        if contrib is not None:
            k = min(top, contrib.shape[1])
            order = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :k]
            out.reason_source = order
            out.reason_contribution = np.take_along_axis(contrib, order, axis=1)
        return out


def vulnerable_mask(statuses: list[str], vulnerable: tuple[str, ...] | list[str]) -> np.ndarray:
    return np.array([s in vulnerable for s in statuses])


def combine_status(p4: np.ndarray, p: np.ndarray, vmask: np.ndarray) -> np.ndarray:
    """Rescale the twin's status probabilities so the vulnerable ones sum to ``p``."""
    eps = 1e-12
    v = p4[:, vmask]
    o = p4[:, ~vmask]
    out = np.empty_like(p4)
    vs = v.sum(axis=1, keepdims=True)
    os_ = o.sum(axis=1, keepdims=True)
    out[:, vmask] = np.where(vs > eps, v / np.maximum(vs, eps), 1 / max(1, vmask.sum())) * p[:, None]
    out[:, ~vmask] = np.where(os_ > eps, o / np.maximum(os_, eps), 1 / max(1, (~vmask).sum())) * (1 - p[:, None])
    return out


def conformal_quantile(proba: np.ndarray, true_index: np.ndarray, alpha: float) -> float:
    """Split-conformal threshold on the score 1 - P(true status), from out-of-fold probabilities."""
    scores = 1 - proba[np.arange(len(true_index)), true_index]
    n = len(scores)
    level = min(1.0, np.ceil((n + 1) * (1 - alpha)) / n)
    return float(np.quantile(scores, level, method="higher"))


def _features(step: Any, X: pd.DataFrame) -> Any:
    """The pipeline's feature step; as arrays when it can (``SurveyFeatures.arrays``): the
    preprocessor reads those directly, with no DataFrame built in between."""
    return step.arrays(X) if hasattr(step, "arrays") else step.transform(X)


def _preprocess(pipeline: Any, features: Any) -> np.ndarray:
    """The steps between the feature step and the estimator, on the feature step's output."""
    Xt = features
    for _, step in pipeline.steps[1:-1]:
        if isinstance(Xt, FeatureArrays) and not isinstance(step, FastColumnTransformer):
            Xt = Xt.frame()
        Xt = step.transform(Xt)
    return np.asarray(Xt, dtype="float64")


def _threads(rows: int) -> dict[str, int]:
    """LightGBM's own predict on a few rows: one thread.  Its OpenMP team costs 3-8 ms a call to start
    (pred_contrib above all), against 0.1 ms for the walk itself on one household.  A batch without
    tables (trees too deep for them) keeps LightGBM's default threads."""
    return {"num_threads": 1} if rows < TABLES_FROM_ROWS else {}


def _twin_proba(est: Any, Xt: np.ndarray) -> np.ndarray:
    """The four-status model's probabilities; LightGBM's booster directly (softmax, one thread),
    without the sklearn wrapper's checks on an array the pipeline just made."""
    if _is_lightgbm(est) and len(est.classes_) > 2:
        return np.asarray(est.booster_.predict(Xt, **_threads(len(Xt))), dtype="float64")
    return np.asarray(est.predict_proba(Xt), dtype="float64")


def _is_lightgbm(est: Any) -> bool:
    return type(est).__module__.startswith("lightgbm")
