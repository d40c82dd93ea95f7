"""Training and scoring: one service each, called by commands, tasks, admin and API alike."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.models import Max
from lightgbm import LGBMClassifier
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupKFold, cross_val_predict

from features.labels import income_per_day_values, is_vulnerable_values, progress_status_values
from features.pipeline import LeakageError, assert_leak_free, build_model_pipeline, input_fields
from features.snapshots import snapshot_write
from ingestion.models import SURVEY_VALUE_FIELDS, SurveyRecord
from rtv import contract
from rtv.locks import exclusive
from rtv.services import audit_record, pipeline_run

from . import registry
from .calibration import SigmoidCalibrated
from .evaluation import comparison_metrics, evaluate
from .lineage import unseen_by
from .models import ModelVersion
from .scoring import HouseholdModel, combine_status, conformal_quantile, vulnerable_mask
from .serving import with_previous_survey
from .triggers import top_features

log = logging.getLogger(__name__)

LEAKAGE_ACCURACY = 0.95
PIP_REQUIREMENTS = ["scikit-learn==1.9.1", "lightgbm==4.6.0", "pandas==3.1.1", "numpy", "skops==0.16.0"]
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "features.", "modelling.", "collections.", "pandas.",
                    "lightgbm.")


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
        # LightGBM rather than scikit-learn's HistGradientBoosting: the same algorithm, plus exact
        # TreeSHAP contributions (pred_contrib) for +10 MB (stack.md), which serving's reasons need.
        Candidate("lightgbm", LGBMClassifier(
            # 8-leaf trees (7 splits, up to depth 4): small enough for exact TreeSHAP tables
            # (modelling/treeshap.py), as many and as cheap to fit as the former depth-3 trees.  Extremely
            # randomised split thresholds (extra_trees) regularise what 3,900 households can support.  On
            # the real extract, mean ROC-AUC of 4 seeds x 4 village groupings (5-fold), with
            # NOT_MODEL_INPUTS and the status weights: 0.7943 (exclusion error at 40% 0.361); depth 3
            # with exact thresholds 0.7918 (0.367), depth 3 + extra_trees 0.7932, depth 4 alone 0.7932.
            # No better: 15-leaf trees, 300 slower trees, colsample 0.5 (and 60% slower to fit),
            # monotone constraints on the counts and business/salary flags.
            # Re-measured on 2026-11-27 with the asset index and temporal features (same protocol):
            # ROC-AUC 0.7908, Brier 0.1833, exclusion error at 40% 0.3611.  Tried then, none worth its
            # cost: regression on log income (0.7883) or its rank (0.7895); four-class (0.7891); an
            # average of 8 per-cut models of income below 1.0..3.0 USD/day (0.7927, 8x the fit, better
            # in 16 of 16 paired runs by only +0.002); blends with logistic regression (0.7865) or a
            # random forest (0.7921, 20x); village or cluster means of inputs (0.788-0.790: 153
            # villages overfit).
            n_estimators=150, learning_rate=0.06, num_leaves=8, max_depth=4, min_child_samples=40, reg_lambda=1.0,
            extra_trees=True, subsample=0.8, subsample_freq=1, colsample_bytree=0.8, random_state=0, verbose=-1,
            n_jobs=1),
            scale=False),
    ]


# The cross-validation holds out whole villages, as deployment meets villages never surveyed.  A village's
# target encoding is then the prior for every held-out household, while training rows carry their own
# village's (cross-fitted) rate: the model learns to lean on a column that is constant where it is used.
# Leaving the village out (its cluster and district stay): mean ROC-AUC 0.7884 -> 0.7899 on the extract
# (former LightGBM, 4 seeds x 4 village groupings).  A cluster encoding cross-fitted by village: no better.
NOT_MODEL_INPUTS = ("village",)

# Households far from the vulnerability line (On Track, Severely Struggling: statuses not adjacent to it)
# weigh this much more in the binary fit than those just either side (At Risk, Struggling), whose side
# of the line is the least certain.  Only the fit sees the weights: CV scores, calibration and metrics
# are unweighted.  Same CV on the extract, extra-trees LightGBM without village, ROC-AUC by weight: 1.0:
# 0.7929, 2.0: 0.7943 (with colsample 0.5: 0.7: 0.7911, 1.0: 0.7927, 2.0: 0.7939, 3.0: 0.7938, 4.0: 0.7935).
BOUNDARY_DISTANCE_WEIGHT = 2.0


def model_fields(columns: Any) -> list[str]:
    """The contract fields the models read: every allowed input present, but the CV grouping field."""
    present = set(columns)
    return [f for f in input_fields() if f in present and f not in NOT_MODEL_INPUTS]


def status_weights(status: np.ndarray, statuses: Sequence[str], vulnerable: Sequence[str],
                   far: float = BOUNDARY_DISTANCE_WEIGHT) -> np.ndarray:
    """Sample weights for the binary fit: ``far`` for a status two or more steps from the vulnerability
    line in the ordered ``statuses`` (best first), 1.0 for the two statuses next to it (and for any
    status not in the list)."""
    order = list(statuses)
    first_vulnerable = min((order.index(s) for s in vulnerable if s in order), default=len(order))
    far_statuses = [s for i, s in enumerate(order) if i < first_vulnerable - 1 or i > first_vulnerable]
    return np.where(np.isin(np.asarray(status, dtype=object).astype(str), far_statuses), far, 1.0)


@dataclass
class TrainingRows:
    """What training knows about each row besides its features (kept out of ``DataFrame.attrs``:
    pandas deep-copies attrs on every column access, which made training minutes slower)."""

    received_at: np.ndarray
    record_ids: np.ndarray
    batch_ids: np.ndarray
    status: np.ndarray  # the 4-class label, for the status twin and evaluation


def training_frame() -> tuple[pd.DataFrame, np.ndarray, np.ndarray, Any, TrainingRows]:
    """Labelled, approved current records: features frame, binary target, village groups, cutoff, row facts."""
    # Only approved records train: by a reviewer, or automatically above the score threshold.
    qs = (SurveyRecord.objects.exclude(progress_status="").filter(review_status=SurveyRecord.ReviewStatus.APPROVED)
          .filter(superseded_by__isnull=True))
    cutoff = qs.aggregate(m=Max("received_at"))["m"]
    rows = list(qs.values_list("vulnerable", "village", "progress_status", "pk", "batch_id", "received_at",
                               "household_id", "collected_at", *(f"values__{f}" for f in SURVEY_VALUE_FIELDS)))
    empty = np.array([])
    if not rows:
        return pd.DataFrame(), empty, empty, cutoff, TrainingRows(empty, empty, empty, empty)
    frame = pd.DataFrame.from_records(rows, columns=["_vulnerable", "_group", "_status", "_record", "_batch",
                                                     "_received", "_household_pk", "collected_at", *SURVEY_VALUE_FIELDS])
    frame = with_previous_survey(frame, frame.pop("_household_pk").to_numpy())  # temporal features need it
    # The label from the stored measure with the thresholds configured now, not as stored: a record
    # labelled under other thresholds would mix two definitions of the target (relabel_records
    # brings the stored labels in line).
    status = progress_status_values(income_per_day_values(frame))
    frame = frame.drop(columns=["_status", "_vulnerable"])
    facts = TrainingRows(received_at=frame.pop("_received").to_numpy(), record_ids=frame.pop("_record").to_numpy(),
                         batch_ids=frame.pop("_batch").astype(str).to_numpy(), status=status)
    y = np.isin(status, list(settings.RTV_VULNERABLE_STATUSES)).astype(int)
    groups = frame.pop("_group").to_numpy(dtype=object)
    return frame, y, groups, cutoff, facts


def records_relabel(*, user: AbstractBaseUser | AnonymousUser | None = None) -> dict[str, int]:
    """Bring every stored label (progress status and vulnerable) in line with the thresholds
    configured now, from each record's stored measure; audited with the thresholds and the counts.
    Run it after changing ``RTV_THRESHOLD_*``: training already uses the new ones, the triggers and
    reports read the stored labels."""
    rows = list(SurveyRecord.objects.values_list("pk", "progress_status", "vulnerable",
                                                 *(f"values__{f}" for f in contract.TARGET_INPUTS)))
    if not rows:
        return {"records": 0, "changed": 0}
    frame = pd.DataFrame.from_records(rows, columns=["pk", "status", "vulnerable", *contract.TARGET_INPUTS])
    status = progress_status_values(income_per_day_values(frame))
    vulnerable = is_vulnerable_values(status)
    changed = np.flatnonzero((status != frame["status"].to_numpy(dtype=object))
                             | (vulnerable != frame["vulnerable"].to_numpy(dtype=object)))
    with transaction.atomic():
        updates = [SurveyRecord(pk=int(frame["pk"].iat[i]), progress_status=status[i], vulnerable=vulnerable[i])
                   for i in changed]
        SurveyRecord.objects.bulk_update(updates, ["progress_status", "vulnerable"], batch_size=2000)
        audit_record(actor=user, action="records.relabelled", object_type="ingestion.SurveyRecord", object_id="*",
                     changes={"thresholds": [list(t) for t in settings.RTV_STATUS_THRESHOLDS],
                              "records": len(rows), "changed": len(changed)})
    return {"records": len(rows), "changed": len(changed)}


def _cross_fitted_calibration(oof: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Calibrated out-of-fold probabilities: each fold's sigmoid is fitted on the other folds only."""
    out = np.empty_like(oof)
    for train, test in splits:
        out[test] = SigmoidCalibrated.from_oof(None, oof[train], y[train]).calibrate(oof[test])
    return out


def _compare_with_champion(X: pd.DataFrame, y: np.ndarray, challenger_oof: np.ndarray,
                           received_at: np.ndarray, record_ids: np.ndarray) -> dict[str, Any] | None:
    """Both models on the same holdout: the records the champion never saw, no version of them
    (a correction of a record it trained on is not new to it: ``lineage``); by the cut-off for a
    champion whose snapshot does not list its records.  The challenger's scores there are
    out-of-fold, so neither model has seen them."""
    champion = champion_version()
    if champion is None or champion.training_cutoff is None:
        return None
    holdout = unseen_by(record_ids, champion)
    if holdout is None:
        received = pd.to_datetime(received_at, utc=True)
        holdout = np.asarray(received > pd.Timestamp(champion.training_cutoff))
    if holdout.sum() < settings.RTV_RETRAIN_MIN_EVAL or len(set(y[holdout])) < 2:
        return None
    model = registry.load_model(champion.name, champion.version)
    # X is serving's frame (values, collected_at, previous_collected_at): the champion's temporal
    # features must see the dates the challenger's did.
    champion_proba = model.predict_proba(X.loc[holdout])[:, 1]
    return {"holdout_rows": int(holdout.sum()), "champion_version": champion.version,
            "challenger": comparison_metrics(y[holdout], challenger_oof[holdout]),
            "champion": comparison_metrics(y[holdout], champion_proba)}


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
        X, y, groups, cutoff, facts = training_frame()
        if len(y) < min_rows:
            raise NotEnoughData(f"{len(y)} labelled records; at least {min_rows} are needed to train")
        fields = model_fields(X.columns)
        assert_leak_free(fields)
        # With the dates the temporal features come from: monitoring scores this snapshot as its
        # reference, and without them its households would be scored unlike the records they are.
        dates = [c for c in ("collected_at", "previous_collected_at") if c in X and c not in fields]
        snapshot = snapshot_write(
            X[fields + dates].assign(record_id=facts.record_ids, vulnerable=y, progress_status=facts.status),
            source_batches=list(facts.batch_ids))
        n_groups = len(set(groups))
        cv = GroupKFold(n_splits=min(folds, n_groups))
        splits = list(cv.split(X, y, groups))
        status = facts.status
        district = X["district"].to_numpy(dtype=object) if "district" in X else None
        sex = X["hhh_sex"].to_numpy(dtype=object) if "hhh_sex" in X else None
        statuses = [name for name, _ in settings.RTV_STATUS_THRESHOLDS] + [settings.RTV_STATUS_FLOOR]
        vulnerable = tuple(settings.RTV_VULNERABLE_STATUSES)
        weights = {"model__sample_weight": status_weights(status, statuses, vulnerable)}
        results: list[tuple[Candidate, dict[str, Any], np.ndarray]] = []
        for cand in candidates():
            pipe = build_model_pipeline(cand.estimator, X, scale=cand.scale, fields=fields)
            raw = cross_val_predict(pipe, X, y, groups=groups, cv=splits, method="predict_proba",
                                    params=weights)[:, 1]
            proba = _cross_fitted_calibration(raw, y, splits)
            metrics = evaluate(y, proba, district=district, sex=sex)
            results.append((cand, metrics, raw))
            log.info("candidate evaluated", extra={"candidate": cand.name, "roc_auc": metrics["roc_auc"],
                                                   "brier": metrics["brier"]})
        best, best_metrics, best_raw = max(results, key=lambda r: r[1]["roc_auc"])
        calibrated_oof = _cross_fitted_calibration(best_raw, y, splits)
        status_text = np.asarray(status, dtype=object).astype(str)
        # The four statuses, from a multi-class twin of the chosen algorithm (same folds); its
        # probabilities are made consistent with the calibrated binary ones, as served.
        twin = build_model_pipeline(clone(best.estimator), X, scale=best.scale, fields=fields)
        if any(name == "target" for name, _, _ in twin.named_steps["pre"].transformers):
            twin.set_params(pre__target__target_type="multiclass")
        twin_oof = cross_val_predict(twin, X, status_text, groups=groups, cv=splits, method="predict_proba")
        twin_classes = sorted(set(status_text))
        p4 = np.zeros((len(y), len(statuses)))
        for j, c in enumerate(twin_classes):
            p4[:, statuses.index(c)] = twin_oof[:, j]
        vmask = vulnerable_mask(statuses, vulnerable)
        status_oof = combine_status(p4, calibrated_oof, vmask)
        flagged = calibrated_oof >= settings.RTV_DECISION_THRESHOLD
        chosen = np.where(flagged[:, None] == vmask[None, :], status_oof, -1.0).argmax(axis=1)
        status_chosen = np.asarray(statuses)[chosen]
        best_metrics["macro_f1_4class"] = float(f1_score(status_text, status_chosen, average="macro"))
        for label, values in (("by_district", district), ("by_sex", sex)):  # the same, per group scored
            for g, figures in best_metrics.get(label, {}).items():
                if values is not None and not figures.get("too_few"):
                    m = np.array([str(v) == g for v in values])
                    figures["macro_f1_4class"] = float(f1_score(status_text[m], status_chosen[m], average="macro"))
        true_index = np.array([statuses.index(s) for s in status_text])
        alpha = settings.RTV_CONFORMAL_ALPHA
        q = conformal_quantile(status_oof, true_index, alpha)
        in_set = status_oof >= 1 - q
        in_set[np.arange(len(y)), status_oof.argmax(axis=1)] = True
        in_set[np.arange(len(y)), chosen] = True  # as served: the status answered is always in the set
        best_metrics["conformal"] = {"alpha": alpha, "q": q,
                                     "coverage_oof": float(in_set[np.arange(len(y)), true_index].mean()),
                                     "mean_set_size": float(in_set.sum(axis=1).mean())}
        leakage_alarm(best_metrics)
        best_metrics["top_features"] = top_features(X, y)
        comparison = _compare_with_champion(X, y, calibrated_oof, facts.received_at, facts.record_ids)
        if comparison:
            best_metrics["comparison"] = comparison
        fitted = build_model_pipeline(best.estimator, X, scale=best.scale, fields=fields).fit(X, y, **weights)
        calibration = SigmoidCalibrated.from_oof(None, best_raw, y)
        final = HouseholdModel(
            binary=fitted, slope=calibration.slope, intercept=calibration.intercept, status_model=twin.fit(X, status_text),
            statuses=tuple(statuses), vulnerable_statuses=vulnerable, conformal_q=q, alpha=alpha,
            threshold=settings.RTV_DECISION_THRESHOLD, borderline_margin=settings.RTV_BORDERLINE_MARGIN,
        ).prepare(X)
        best_metrics["model_top_features"] = model_top_features(final, X)
        leakage_alarm(best_metrics)
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
        with exclusive(registry.ROLLOUT_LOCK):  # two trainings at once: one challenger, in MLflow and here alike
            mv = _register(name=name, version=version, mlrun=mlrun, best=best, fields=fields, best_metrics=best_metrics,
                           results=results, y=y, cutoff=cutoff, snapshot=snapshot, user=user)
        run.counts = {"rows": len(y), "version": version, "train_seconds": round(cv_seconds, 2)}
    return mv


def _register(*, name: str, version: int, mlrun: Any, best: Any, fields: list[str], best_metrics: dict[str, Any],
              results: list[Any], y: Any, cutoff: Any, snapshot: Any, user: Any) -> ModelVersion:
    """The new version as the challenger, here and in MLflow (under the rollout lock); the first
    model becomes champion through the gate."""
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

        # Not queued for rescoring: every door that trains scores right after (the command unless
        # --no-score, the task), and a queued run would take the records from under its count.
        mv = model_promote(version=version, user=user, rescore=False)
    return mv


def leakage_alarm(metrics: dict[str, Any]) -> None:
    """Block registration when the model looks like it reads the label: accuracy above 0.95, or a
    field that is not a model input (money, derived, label) among its ten strongest features."""
    if metrics["accuracy"] > LEAKAGE_ACCURACY:
        raise LeakageError(f"cross-validated accuracy {metrics['accuracy']:.3f} > {LEAKAGE_ACCURACY}: "
                           "a label leak is likelier than a breakthrough; registration refused")
    leaked = [f for f in metrics.get("model_top_features", [])[:10]
              if f in contract.FIELDS_BY_NAME and contract.FIELDS_BY_NAME[f].role not in contract.MODEL_INPUT_ROLES]
    if leaked:
        raise LeakageError(f"fields that are not model inputs rank among the top features: {', '.join(leaked)}; "
                           "registration refused")


def model_top_features(model: HouseholdModel, X: pd.DataFrame, k: int = 10, sample: int = 2000) -> list[str]:
    """The fields the fitted model leans on most: mean |exact contribution| on a training sample."""
    rows = X.sample(n=min(sample, len(X)), random_state=0) if len(X) > sample else X
    _, Xt = model._transform(rows)
    contrib, _ = model.contributions(Xt)
    order = np.argsort(-np.abs(contrib).mean(axis=0))[:k]
    return [model.sources_[j] for j in order]


def champion_version() -> ModelVersion | None:
    name = settings.RTV_MODEL_NAME
    if not ModelVersion.objects.filter(name=name).exists():
        return None  # nothing was ever trained: no need to ask the registry
    version = registry.alias_version(name, registry.CHAMPION)
    if version is None:
        return None
    return ModelVersion.objects.filter(name=name, version=version).first()
