"""Retraining triggers, evaluated by a scheduled job and on demand; every decision is stored with
its inputs.  Drift is decided on effect sizes (PSI), not p-values (stack.md: at survey sizes a
KS test flags trivial shifts)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import connection, transaction
from django.db.models.expressions import RawSQL
from django.utils import timezone
from sklearn.metrics import roc_auc_score

from features.pipeline import input_fields, survey_fields_behind
from features.snapshots import snapshot_read, snapshot_record_ids
from ingestion.models import SurveyRecord
from rtv.bulk import int_array
from rtv.locks import exclusive
from rtv.models import PipelineRun
from rtv.outbox import outbox_enqueue

from . import registry, serving
from .models import ModelVersion, RetrainDecision

PSI_MODERATE, PSI_MAJOR = 0.1, 0.25
NUMERIC_BINS = 10


def psi_numeric(reference: np.ndarray, current: np.ndarray, bins: int = NUMERIC_BINS) -> float:
    """PSI with quantile bins from the reference; empty bins floored so the log stays finite."""
    reference, current = reference[~np.isnan(reference)], current[~np.isnan(current)]
    if len(reference) == 0 or len(current) == 0:
        return 0.0
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1) / len(reference)
    c = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1) / len(current)
    r, c = np.maximum(r, 1e-4), np.maximum(c, 1e-4)
    return float(np.sum((c - r) * np.log(c / r)))


def psi_categorical(reference: pd.Series, current: pd.Series) -> float:
    r = reference.fillna("∅").astype(str).value_counts(normalize=True)
    c = current.fillna("∅").astype(str).value_counts(normalize=True)
    keys = r.index.union(c.index)
    rv = np.maximum(r.reindex(keys, fill_value=0).to_numpy(), 1e-4)
    cv = np.maximum(c.reindex(keys, fill_value=0).to_numpy(), 1e-4)
    return float(np.sum((cv - rv) * np.log(cv / rv)))


def labelled_records() -> Any:
    """What trains: current, approved records with a label."""
    return (SurveyRecord.objects.exclude(progress_status="").filter(review_status="approved")
            .filter(superseded_by__isnull=True))


def unseen_labelled(mv: ModelVersion) -> tuple[Any, str]:
    """Labelled records ``mv`` did not train on, and how that was decided.

    By the record ids of its training snapshot: a record received before the training but approved
    (or corrected) after it is new to the model, which a received-after-the-cut-off test misses.  A
    version from before snapshots falls back to the cut-off."""
    labelled = labelled_records()
    trained = snapshot_record_ids(mv.snapshot) if mv.snapshot_id is not None else None
    if trained is None:
        cutoff = mv.training_cutoff
        return (labelled.filter(received_at__gt=cutoff) if cutoff else labelled.none()), "received after the cut-off"
    ids = np.fromiter(labelled.values_list("pk", flat=True), dtype=np.int64)
    new = np.setdiff1d(ids, np.asarray(trained, dtype=np.int64)).tolist()
    if connection.vendor == "postgresql":
        return labelled.filter(pk__in=RawSQL("SELECT unnest(%s::bigint[])", [int_array(new)])), "not in its training snapshot"
    return labelled.filter(pk__in=new), "not in its training snapshot"


def _frame(qs: Any) -> pd.DataFrame:
    """Records as serving scores them (values, ``collected_at`` and ``previous_collected_at``), plus
    their binary label: the champion's temporal features must not turn to NaN here."""
    frame = serving.records_frame(qs.order_by("pk"))
    label = dict(qs.values_list("pk", "vulnerable"))
    return frame.assign(_vulnerable=frame["_record"].map(label))


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, top: list[str]) -> dict[str, Any]:
    psi: dict[str, float] = {}
    for name in input_fields():
        if name not in reference or name not in current:
            continue
        if pd.api.types.is_numeric_dtype(reference[name]) and pd.api.types.is_numeric_dtype(current[name]):
            psi[name] = round(psi_numeric(reference[name].to_numpy(float), current[name].to_numpy(float)), 4)
        else:
            psi[name] = round(psi_categorical(reference[name], current[name]), 4)
    major = sorted(k for k, v in psi.items() if v >= PSI_MAJOR)
    moderate = sorted(k for k, v in psi.items() if PSI_MODERATE <= v < PSI_MAJOR)
    top_major = sorted(set(top) & set(major))
    drift = bool(psi) and (len(major) >= len(psi) / 2 or bool(top_major))
    return {"psi": psi, "major": major, "moderate": moderate, "top_features": top, "top_major": top_major,
            "drift": drift}


def retrain_triggers_evaluate(*, manual: bool = False, enqueue: bool = True,
                              now: datetime | None = None) -> RetrainDecision:
    """The schedule and new-samples triggers count from the latest *trained* version, champion or
    not: a challenger the gate refused already used those samples, and retraining every night on
    the same data would register a near copy each time.  Degradation and drift judge the champion
    (what serves) on the records it has not seen."""
    # One evaluation at a time: two at once (the nightly job and the API's) would each see no
    # training queued and queue one each.
    with exclusive("modelling.retrain_triggers"):
        return _evaluate(manual=manual, enqueue=enqueue, now=now or timezone.now())


def training_pending(now: datetime) -> RetrainDecision | None:
    """The decision whose training is queued or running: queued within ``RTV_RETRAIN_PENDING_HOURS``
    and no training run has ended since (one that died without ending stops counting after that
    time, so a lost worker cannot stop retraining for good)."""
    last = (RetrainDecision.objects.filter(retrain_queued=True,
                                           evaluated_at__gte=now - timedelta(hours=settings.RTV_RETRAIN_PENDING_HOURS))
            .order_by("-evaluated_at").first())
    if last is None:
        return None
    ended = (PipelineRun.objects.filter(job="train_model", started_at__gte=last.evaluated_at)
             .exclude(status=PipelineRun.Status.RUNNING).exists())
    return None if ended else last


def _evaluate(*, manual: bool, enqueue: bool, now: datetime) -> RetrainDecision:
    name = settings.RTV_MODEL_NAME
    version = registry.alias_version(name, registry.CHAMPION) if ModelVersion.objects.filter(name=name).exists() else None
    champion = ModelVersion.objects.filter(name=name, version=version).first() if version else None
    latest = ModelVersion.objects.filter(name=name).order_by("-created_at", "-version").first()
    fired: list[str] = []
    inputs: dict[str, Any] = {}
    if manual:
        fired.append(RetrainDecision.Trigger.MANUAL)
    labelled = labelled_records()
    if champion is None:
        # Nothing trained yet: every approved labelled record is new, and 50 of them are enough to
        # ask for a first model (fewer would only fail to train, night after night).
        count = labelled.count()
        inputs["champion"] = None
        inputs["new_samples"] = {"count": count, "threshold": settings.RTV_RETRAIN_NEW_SAMPLES, "since": None}
        if count >= settings.RTV_RETRAIN_NEW_SAMPLES:
            fired.append(RetrainDecision.Trigger.NEW_SAMPLES)
    else:
        assert latest is not None  # the champion is one of the versions
        since = latest.training_cutoff
        unseen, how = unseen_labelled(latest)
        n_since = unseen.count()
        inputs["new_samples"] = {"count": n_since, "threshold": settings.RTV_RETRAIN_NEW_SAMPLES,
                                 "since": since.isoformat() if since else None, "since_version": latest.version,
                                 "counted": how}
        if n_since >= settings.RTV_RETRAIN_NEW_SAMPLES:
            fired.append(RetrainDecision.Trigger.NEW_SAMPLES)
        age = now - latest.created_at
        inputs["schedule"] = {"age_days": round(age.total_seconds() / 86400, 2), "every_days": 7,
                              "since_version": latest.version}
        if age >= timedelta(days=7):
            fired.append(RetrainDecision.Trigger.SCHEDULE)
        cutoff = champion.training_cutoff
        new = unseen_labelled(champion)[0] if champion.pk != latest.pk else unseen
        n_new = new.count()
        if n_new >= settings.RTV_RETRAIN_MIN_EVAL:
            current = _frame(new)
            y = current["_vulnerable"].astype(bool).to_numpy().astype(int)
            if len(set(y)) == 2:
                model = registry.load_model(champion.name, champion.version)
                auc = float(roc_auc_score(y, model.predict_proba(current)[:, 1]))
                drop = champion.metrics["roc_auc"] - auc
                inputs["degradation"] = {"new_auc": round(auc, 4), "trained_auc": round(champion.metrics["roc_auc"], 4),
                                         "drop": round(drop, 4), "tolerance": settings.RTV_RETRAIN_AUC_TOLERANCE}
                if drop > settings.RTV_RETRAIN_AUC_TOLERANCE:
                    fired.append(RetrainDecision.Trigger.DEGRADATION)
            if n_new >= settings.RTV_DRIFT_MIN_ROWS:
                # Against what the champion was trained on: its training snapshot (processed/), as
                # recorded; a version from before snapshots, against the records it could have seen.
                if champion.snapshot_id is not None:
                    reference = snapshot_read(champion.snapshot)
                    against = f"training snapshot {champion.snapshot_id}"
                else:
                    reference = _frame(labelled.filter(received_at__lte=cutoff))
                    against = "records received before the training cut-off"
                report = drift_report(reference, current, drift_top_fields(champion))
                inputs["drift"] = {**report, "reference": against, "reference_rows": len(reference)}
                if report["drift"]:
                    fired.append(RetrainDecision.Trigger.DRIFT)
            else:  # a PSI over ten bins of a few dozen rows is mostly sampling noise: ~0.15 expected, 0.25 common
                inputs["drift"] = {"skipped": f"{n_new} new records; drift is judged from {settings.RTV_DRIFT_MIN_ROWS}"}
    pending = training_pending(now) if fired else None
    if pending is not None:  # the training already asked for will see these records too
        inputs["already_queued"] = {"decision": pending.pk, "at": pending.evaluated_at.isoformat()}
    with transaction.atomic():
        decision = RetrainDecision.objects.create(champion_version=version, fired=[str(f) for f in fired],
                                                  inputs=inputs,
                                                  retrain_queued=bool(fired) and enqueue and pending is None)
        if decision.retrain_queued:
            outbox_enqueue("modelling.train_and_score")
    return decision


def retrain_requested(*, user: Any, door: str) -> RetrainDecision:
    """A person asked for a training run (API or admin): the manual trigger, stored with who asked
    and through which door, audited, and queued with the user so the training run records them too.
    (``retrain_triggers_evaluate(manual=True)`` also evaluates the other triggers; this one does not
    make the person wait for that.)"""
    from rtv.services import audit_record

    person = user if user is not None and getattr(user, "is_authenticated", False) else None
    version = (registry.alias_version(settings.RTV_MODEL_NAME, registry.CHAMPION)
               if ModelVersion.objects.filter(name=settings.RTV_MODEL_NAME).exists() else None)
    with transaction.atomic():
        decision = RetrainDecision.objects.create(
            champion_version=version, fired=[str(RetrainDecision.Trigger.MANUAL)], retrain_queued=True,
            inputs={"manual": {"requested_by": person.get_username() if person else None, "door": door}})
        audit_record(actor=person, action="model.retrain_requested", obj=decision, changes={"door": door})
        outbox_enqueue("modelling.train_and_score", person.pk if person else None)
    return decision


def drift_top_fields(mv: ModelVersion, k: int = 5) -> list[str]:
    """The 'top five features' of the drift rule: the survey fields behind the features the model
    leans on most (its mean |exact contribution|), a derived feature standing for the fields it is
    computed from; the one list the retraining trigger and the daily monitoring both judge.  A
    version from before that ranking was recorded falls back to the univariate one."""
    ranked = mv.metrics.get("model_top_features")
    if not ranked:
        return list(mv.metrics.get("top_features", []))[:k]
    inputs = set(input_fields())
    return [f for f in survey_fields_behind(ranked) if f in inputs][:k]


def top_features(X: pd.DataFrame, y: np.ndarray, k: int = 5) -> list[str]:
    """The inputs most associated with the label on their own (|AUC - 0.5|), a cheap, model-free
    ranking for the drift rule 'any of the top five features shifts'."""
    scores: dict[str, float] = {}
    for name in input_fields():
        if name not in X or not pd.api.types.is_numeric_dtype(X[name]):
            continue
        v = X[name].to_numpy(float)
        m = ~np.isnan(v)
        if m.sum() < 20 or len(set(y[m])) < 2 or len(set(v[m])) < 2:
            continue
        scores[name] = abs(float(roc_auc_score(y[m], v[m])) - 0.5)
    return [n for n, _ in sorted(scores.items(), key=lambda kv: -kv[1])[:k]]
