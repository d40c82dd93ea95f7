"""Honest evaluation of a vulnerability model: discrimination, calibration, targeting errors at fixed
coverage, and the same by district and by sex of the household head."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    roc_auc_score,
)

COVERAGES = (0.2, 0.4)


def targeting(y: np.ndarray, proba: np.ndarray, coverage: float) -> dict[str, float]:
    """Select the ``coverage`` share ranked most vulnerable: exclusion error = vulnerable not
    selected / all vulnerable; inclusion error = non-vulnerable selected / all selected."""
    k = max(1, round(coverage * len(y)))
    selected = np.zeros(len(y), dtype=bool)
    selected[np.argsort(-proba, kind="stable")[:k]] = True
    vulnerable = y == 1
    return {"exclusion_error": float(1 - (selected & vulnerable).sum() / max(1, vulnerable.sum())),
            "inclusion_error": float((selected & ~vulnerable).sum() / k)}


def coverage_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Exclusion and inclusion error at each of COVERAGES: ``exclusion_error_at_20``, ... ."""
    out: dict[str, float] = {}
    for c in COVERAGES:
        t = targeting(y, proba, c)
        out[f"exclusion_error_at_{int(c * 100)}"] = t["exclusion_error"]
        out[f"inclusion_error_at_{int(c * 100)}"] = t["inclusion_error"]
    return out


def calibration_curve(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(proba, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        if m.any():
            out.append({"bin": b, "mean_predicted": float(proba[m].mean()), "observed": float(y[m].mean()),
                        "count": int(m.sum())})
    return out


def evaluate(y: np.ndarray, proba: np.ndarray, *, district: np.ndarray | None = None, sex: np.ndarray | None = None,
             status_true: np.ndarray | None = None, status_pred: np.ndarray | None = None) -> dict[str, Any]:
    pred = proba >= 0.5
    metrics: dict[str, Any] = {
        "roc_auc": float(roc_auc_score(y, proba)),
        "pr_auc": float(average_precision_score(y, proba)),
        "brier": float(brier_score_loss(y, proba)),
        "log_loss": float(log_loss(y, np.clip(proba, 1e-6, 1 - 1e-6))),
        "accuracy": float(accuracy_score(y, pred)),
        "positive_rate": float(y.mean()),
        "confusion_matrix": confusion_matrix(y, pred, labels=[0, 1]).tolist(),
        "calibration_curve": calibration_curve(y, proba),
    }
    metrics.update(coverage_metrics(y, proba))
    if status_true is not None and status_pred is not None:
        metrics["macro_f1_4class"] = float(f1_score(status_true, status_pred, average="macro"))
    for label, groups in (("by_district", district), ("by_sex", sex)):
        if groups is None:
            continue
        metrics[label] = {}
        for g in sorted({str(v) for v in groups if v is not None and v == v}):
            m = np.array([str(v) == g for v in groups])
            if m.sum() < 20 or len(set(y[m])) < 2:
                continue
            yg, pg = y[m], proba[m]
            metrics[label][g] = {"n": int(m.sum()), "positive_rate": float(yg.mean()),
                                 "roc_auc": float(roc_auc_score(yg, pg)), "pr_auc": float(average_precision_score(yg, pg)),
                                 "brier": float(brier_score_loss(yg, pg)), **coverage_metrics(yg, pg)}
    return metrics
