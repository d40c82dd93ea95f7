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


def selections(proba: np.ndarray) -> dict[float, np.ndarray]:
    """At each of COVERAGES, which rows the programme selects: the share ranked most vulnerable."""
    out = {}
    for c in COVERAGES:
        k = max(1, round(c * len(proba)))
        selected = np.zeros(len(proba), dtype=bool)
        selected[np.argsort(-proba, kind="stable")[:k]] = True
        out[c] = selected
    return out


def group_coverage_metrics(y: np.ndarray, selected: dict[float, np.ndarray], m: np.ndarray) -> dict[str, float | None]:
    """A group's targeting errors under the selection made over everyone (what a breakdown by
    district or sex is for: the gap between groups), not re-ranked inside the group."""
    out: dict[str, float | None] = {}
    vulnerable = y[m] == 1
    for c, chosen in selected.items():
        picked = chosen[m]
        name = int(c * 100)
        out[f"exclusion_error_at_{name}"] = (float(1 - (picked & vulnerable).sum() / vulnerable.sum())
                                             if vulnerable.any() else None)
        out[f"inclusion_error_at_{name}"] = float((picked & ~vulnerable).sum() / picked.sum()) if picked.any() else None
        out[f"selected_at_{name}"] = float(picked.mean())
    return out


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
             status_true: np.ndarray | None = None, status_pred: np.ndarray | None = None,
             threshold: float | None = None) -> dict[str, Any]:
    """``threshold``: the calibrated P(vulnerable) that flags a household, as serving uses it
    (``RTV_DECISION_THRESHOLD`` by default): accuracy and the confusion matrix are at it."""
    from django.conf import settings

    threshold = settings.RTV_DECISION_THRESHOLD if threshold is None else threshold
    pred = proba >= threshold
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
    metrics["threshold"] = threshold
    selected = selections(proba)
    for label, groups in (("by_district", district), ("by_sex", sex)):
        if groups is None:
            continue
        metrics[label] = {}
        for g in sorted({str(v) for v in groups if v is not None and v == v}):
            m = np.array([str(v) == g for v in groups])
            if m.sum() < 20:  # too few to say anything; counted, not scored
                metrics[label][g] = {"n": int(m.sum()), "too_few": True}
                continue
            yg, pg = y[m], proba[m]
            both = len(set(yg.tolist())) == 2  # a group of one class has no AUC, but it has targeting errors
            metrics[label][g] = {
                "n": int(m.sum()), "positive_rate": float(yg.mean()),
                "roc_auc": float(roc_auc_score(yg, pg)) if both else None,
                "pr_auc": float(average_precision_score(yg, pg)) if both else None,
                "brier": float(brier_score_loss(yg, pg)),
                "log_loss": float(log_loss(yg, np.clip(pg, 1e-6, 1 - 1e-6), labels=[0, 1])),
                "accuracy": float(accuracy_score(yg, pred[m])),
                "confusion_matrix": confusion_matrix(yg, pred[m], labels=[0, 1]).tolist(),
                "calibration_curve": calibration_curve(yg, pg),
                **({"macro_f1_4class": float(f1_score(np.asarray(status_true)[m], np.asarray(status_pred)[m],
                                                      average="macro"))}
                   if status_true is not None and status_pred is not None else {}),
                **group_coverage_metrics(y, selected, m),
                # ...and as if the group were ranked on its own (a quota per district, say)
                **{f"within_{k}": v for k, v in coverage_metrics(yg, pg).items()}}
    return metrics


COMPARISON_METRICS = ("roc_auc", "brier", "exclusion_error_at_40", "inclusion_error_at_40", "accuracy")


def comparison_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, Any]:
    """What the promotion gate compares two models on, over the same rows."""
    return {k: v for k, v in evaluate(y, proba).items() if k in COMPARISON_METRICS}
