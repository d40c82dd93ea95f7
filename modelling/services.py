"""Training and scoring: one service each, called by commands, tasks, admin and API alike."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupKFold, cross_val_predict

from features.pipeline import LeakageError, assert_leak_free, build_model_pipeline, input_fields
from features.snapshots import snapshot_write
from ingestion.models import SURVEY_VALUE_FIELDS, SurveyRecord
from rtv.bulk import copy_frame
from rtv.services import audit_record, pipeline_run

from . import registry
from .calibration import SigmoidCalibrated
from .evaluation import evaluate
from .models import ModelVersion, Prediction
from .triggers import top_features

log = logging.getLogger(__name__)

LEAKAGE_ACCURACY = 0.95
PIP_REQUIREMENTS = ["scikit-learn==1.9.1", "pandas==3.1.1", "numpy", "skops==0.16.0"]
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "features.", "modelling.", "collections.", "pandas.")


class NotEnoughData(ValueError):
    pass


@dataclass
class Candidate:
    name: str
    estimator: Any
    scale: bool


def candidates() -> list[Candidate]:
    return [
        Candidate("logistic_regression", LogisticRegression(C=0.5, max_iter=2000), scale=True),
        Candidate("hist_gradient_boosting", HistGradientBoostingClassifier(
            learning_rate=0.05, max_iter=200, max_leaf_nodes=15, min_samples_leaf=40, l2_regularization=1.0,
            random_state=0), scale=False),
    ]


def training_frame() -> tuple[pd.DataFrame, np.ndarray, np.ndarray, Any]:
    """Labelled, non-rejected records: features frame, binary target, village groups, cutoff."""
    # Only approved records train: by a reviewer, or automatically above the score threshold.
    qs = (SurveyRecord.objects.exclude(progress_status="").filter(review_status=SurveyRecord.ReviewStatus.APPROVED)
          .filter(superseded_by__isnull=True))
    cutoff = qs.aggregate(m=Max("received_at"))["m"]
    rows = list(qs.values_list("vulnerable", "village", "progress_status", "pk", "batch_id", "received_at",
                               *(f"values__{f}" for f in SURVEY_VALUE_FIELDS)))
    if not rows:
        return pd.DataFrame(), np.array([]), np.array([]), cutoff
    frame = pd.DataFrame.from_records(rows, columns=["_vulnerable", "_group", "_status", "_record", "_batch",
                                                     "_received", *SURVEY_VALUE_FIELDS])
    frame.attrs["received_at"] = frame.pop("_received").to_numpy()
    frame.attrs["record_ids"] = frame.pop("_record").to_numpy()
    frame.attrs["batch_ids"] = frame.pop("_batch").astype(str).to_numpy()
    y = frame.pop("_vulnerable").astype(bool).to_numpy().astype(int)
    groups = frame.pop("_group").to_numpy(dtype=object)
    frame.attrs["status"] = frame.pop("_status").to_numpy(dtype=object)  # the 4-class label, for evaluation
    return frame, y, groups, cutoff


def _cross_fitted_calibration(oof: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Calibrated out-of-fold probabilities: each fold's sigmoid is fitted on the other folds only."""
    out = np.empty_like(oof)
    for train, test in splits:
        out[test] = SigmoidCalibrated.from_oof(None, oof[train], y[train]).calibrate(oof[test])
    return out


def _compare_with_champion(X: pd.DataFrame, y: np.ndarray, challenger_oof: np.ndarray) -> dict[str, Any] | None:
    """Both models on the same holdout: the records the champion never saw (received after its
    cut-off).  The challenger's scores there are out-of-fold, so neither model has seen them."""
    champion = champion_version()
    if champion is None or champion.training_cutoff is None:
        return None
    received = pd.to_datetime(X.attrs["received_at"], utc=True)
    holdout = np.asarray(received > pd.Timestamp(champion.training_cutoff))
    if holdout.sum() < settings.RTV_RETRAIN_MIN_EVAL or len(set(y[holdout])) < 2:
        return None
    model = registry.load_model(champion.name, champion.version)
    champion_proba = model.predict_proba(X.loc[holdout, list(SURVEY_VALUE_FIELDS)])[:, 1]
    keep = ("roc_auc", "brier", "exclusion_error_at_40", "inclusion_error_at_40", "accuracy")
    return {"holdout_rows": int(holdout.sum()), "champion_version": champion.version,
            "challenger": {k: v for k, v in evaluate(y[holdout], challenger_oof[holdout]).items() if k in keep},
            "champion": {k: v for k, v in evaluate(y[holdout], champion_proba).items() if k in keep}}


def _trusted_types(model: Any) -> list[str]:
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    refused = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
    if refused:
        raise ValueError(f"model holds types we will not trust on load: {refused}")
    return list(untrusted)


def model_train(*, user: AbstractBaseUser | AnonymousUser | None = None, folds: int = 5,
                min_rows: int = 50) -> ModelVersion:
    """Train the candidates with village-grouped CV, register the best in MLflow as ``challenger``
    (and ``champion`` when there is none yet), then score the stored records with it."""
    with pipeline_run("train_model", user=user) as run:
        t0 = time.perf_counter()
        X, y, groups, cutoff = training_frame()
        if len(y) < min_rows:
            raise NotEnoughData(f"{len(y)} labelled records; at least {min_rows} are needed to train")
        fields = [f for f in input_fields() if f in X.columns]
        assert_leak_free(fields)
        snapshot = snapshot_write(
            X[fields].assign(record_id=X.attrs["record_ids"], vulnerable=y, progress_status=X.attrs.get("status")),
            source_batches=list(X.attrs["batch_ids"]))
        n_groups = len(set(groups))
        cv = GroupKFold(n_splits=min(folds, n_groups))
        splits = list(cv.split(X, y, groups))
        status = X.attrs.get("status")
        district = X["district"].to_numpy(dtype=object) if "district" in X else None
        sex = X["hhh_sex"].to_numpy(dtype=object) if "hhh_sex" in X else None
        results: list[tuple[Candidate, dict[str, Any], np.ndarray]] = []
        for cand in candidates():
            pipe = build_model_pipeline(cand.estimator, X, scale=cand.scale, fields=fields)
            raw = cross_val_predict(pipe, X, y, groups=groups, cv=splits, method="predict_proba")[:, 1]
            proba = _cross_fitted_calibration(raw, y, splits)
            metrics = evaluate(y, proba, district=district, sex=sex)
            results.append((cand, metrics, raw))
            log.info("candidate evaluated", extra={"candidate": cand.name, "roc_auc": metrics["roc_auc"],
                                                   "brier": metrics["brier"]})
        best, best_metrics, best_raw = max(results, key=lambda r: r[1]["roc_auc"])
        if status is not None:
            # The four statuses, from a multi-class twin of the chosen algorithm (same folds).
            twin = build_model_pipeline(clone(best.estimator), X, scale=best.scale, fields=fields)
            if any(name == "target" for name, _, _ in twin.named_steps["pre"].transformers):
                twin.set_params(pre__target__target_type="multiclass")
            four = cross_val_predict(twin, X, status.astype(str), groups=groups, cv=splits)
            best_metrics["macro_f1_4class"] = float(f1_score(status.astype(str), four, average="macro"))
        if best_metrics["accuracy"] > LEAKAGE_ACCURACY:
            raise LeakageError(f"cross-validated accuracy {best_metrics['accuracy']:.3f} > {LEAKAGE_ACCURACY}: "
                               "a label leak is likelier than a breakthrough; registration refused")
        best_metrics["top_features"] = top_features(X, y)
        comparison = _compare_with_champion(X, y, _cross_fitted_calibration(best_raw, y, splits))
        if comparison:
            best_metrics["comparison"] = comparison
        fitted = build_model_pipeline(best.estimator, X, scale=best.scale, fields=fields).fit(X, y)
        final = SigmoidCalibrated.from_oof(fitted, best_raw, y)
        cv_seconds = time.perf_counter() - t0

        registry.configure()
        import mlflow
        import mlflow.sklearn

        name = settings.RTV_MODEL_NAME
        with mlflow.start_run(experiment_id=registry.experiment_id()) as mlrun:
            mlflow.log_params({"algorithm": best.name, "folds": cv.n_splits, "rows": len(y), "features": len(fields),
                               "cv": "GroupKFold(village)"})
            mlflow.log_metrics({f"cv_{k}": v for k, v in best_metrics.items()
                                if isinstance(v, float | int) and not isinstance(v, bool)})
            mlflow.log_dict(best_metrics, "evaluation.json")
            mlflow.log_params({"snapshot": str(snapshot.pk), "snapshot_sha256": snapshot.sha256})
            for cand, metrics, _ in results:
                mlflow.log_metrics({f"{cand.name}_roc_auc": metrics["roc_auc"]})
            info = mlflow.sklearn.log_model(
                final, name="model", pip_requirements=PIP_REQUIREMENTS, serialization_format="skops",
                skops_trusted_types=_trusted_types(final), registered_model_name=name,
                input_example=None,
            )
        version = int(info.registered_model_version)
        registry.set_alias(name, registry.CHALLENGER, version)
        aliases = [registry.CHALLENGER]
        first_model = registry.alias_version(name, registry.CHAMPION) is None
        with transaction.atomic():
            mv = ModelVersion.objects.create(
                name=name, version=version, mlflow_run_id=mlrun.info.run_id, model_uri=f"models:/{name}/{version}",
                algorithm=best.name, features=fields,
                metrics={**best_metrics, "candidates": {c.name: {k: v for k, v in m.items() if isinstance(v, float)}
                                                        for c, m, _ in results}},
                training_rows=len(y), training_cutoff=cutoff, aliases=aliases, snapshot=snapshot,
            )
            for other in ModelVersion.objects.filter(name=name).exclude(pk=mv.pk):
                kept = [a for a in other.aliases if a not in aliases]
                if kept != other.aliases:
                    other.aliases = kept
                    other.save(update_fields=["aliases"])
            audit_record(actor=user, action="model.registered", obj=mv,
                         changes={"version": version, "aliases": aliases, "roc_auc": best_metrics["roc_auc"]})
        if first_model:  # the first model has no champion to beat: it becomes champion, through the gate
            from .promotion import model_promote

            mv = model_promote(version=version, user=user)
        run.counts = {"rows": len(y), "version": version, "train_seconds": round(cv_seconds, 2)}
    return mv


def champion_version() -> ModelVersion | None:
    name = settings.RTV_MODEL_NAME
    if not ModelVersion.objects.filter(name=name).exists():
        return None  # nothing was ever trained: no need to ask the registry
    version = registry.alias_version(name, registry.CHAMPION)
    if version is None:
        return None
    return ModelVersion.objects.filter(name=name, version=version).first()


def predictions_score(mv: ModelVersion, *, record_ids: list[int] | None = None, chunk: int = 50_000) -> int:
    """Score records with a model version and store the predictions by COPY."""
    model = registry.load_model(mv.name, mv.version)
    qs = SurveyRecord.objects.filter(superseded_by__isnull=True)
    if record_ids is not None:
        qs = qs.filter(pk__in=record_ids)
    ids_all = list(qs.order_by("pk").values_list("pk", flat=True))
    written = 0
    threshold = 0.5
    for start in range(0, len(ids_all), chunk):
        ids = ids_all[start:start + chunk]
        rows = list(SurveyRecord.objects.filter(pk__in=ids).order_by("pk")
                    .values_list("pk", *(f"values__{f}" for f in SURVEY_VALUE_FIELDS)))
        frame = pd.DataFrame.from_records(rows, columns=["_pk", *SURVEY_VALUE_FIELDS])
        scored_ids: np.ndarray = frame.pop("_pk").to_numpy()
        proba = model.predict_proba(frame)[:, 1]
        out = pd.DataFrame({
            "record_id": scored_ids,
            "model_version_id": mv.pk,
            "probability_vulnerable": proba,
            "predicted_vulnerable": proba >= threshold,
            "variant": "champion",
            "created_at": timezone.now(),
        })
        with transaction.atomic():
            written += copy_frame(Prediction, out, list(out.columns), not_null_text=["variant"])
    return written
