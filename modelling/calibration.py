"""Platt (sigmoid) calibration fitted on out-of-fold predictions, saved inside the model."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


class SigmoidCalibrated(ClassifierMixin, BaseEstimator):
    """A fitted pipeline plus a sigmoid fitted on its out-of-fold probabilities.

    ``CalibratedClassifierCV(FrozenEstimator(model))`` would calibrate on the training rows the model
    has seen; fitting on out-of-fold scores from the village-grouped CV avoids that optimism."""

    def __init__(self, model: Any = None, slope: float = 1.0, intercept: float = 0.0) -> None:
        self.model = model
        self.slope = slope
        self.intercept = intercept

    @classmethod
    def from_oof(cls, model: Any, oof_proba: np.ndarray, y: np.ndarray) -> SigmoidCalibrated:
        lr = LogisticRegression(C=1e6).fit(_logit(oof_proba).reshape(-1, 1), y)
        out = cls(model=model, slope=float(lr.coef_[0, 0]), intercept=float(lr.intercept_[0]))
        out.classes_ = np.array([0, 1])
        return out

    def fit(self, X: Any, y: Any) -> SigmoidCalibrated:  # the parts are fitted: nothing to do
        self.classes_ = np.array([0, 1])
        return self

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(self.slope * _logit(raw) + self.intercept)))

    def predict_proba(self, X: Any) -> np.ndarray:
        p = self.calibrate(self.model.predict_proba(X)[:, 1])
        return np.column_stack([1 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)
