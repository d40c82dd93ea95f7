"""A/B and shadow experiments: starting and ending them, and the comparison report."""

from __future__ import annotations

from typing import Any

import numpy as np
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from ingestion.models import SurveyRecord
from rtv.locks import exclusive
from rtv.outbox import outbox_enqueue
from rtv.services import audit_record

from . import registry, serving
from .evaluation import evaluate
from .lineage import unseen_by
from .models import Experiment, ModelVersion, Prediction

REPORT_MAX_RECORDS = 20_000


class ExperimentNameTaken(ValidationError):
    """A name is part of the assignment hash: never reused."""


def experiment_start(*, name: str, challenger: ModelVersion, traffic_share: float = 0.1, shadow: bool = False,
                     champion: ModelVersion | None = None,
                     user: AbstractBaseUser | AnonymousUser | None = None) -> Experiment:
    """Start an experiment against the current champion (one runs at a time: the previous one ends).
    Under the rollout lock: a promotion at the same moment either comes first (and this experiment
    compares against the new champion) or after (and ends it)."""
    with exclusive(registry.ROLLOUT_LOCK):
        return _start(name=name, challenger=challenger, traffic_share=traffic_share, shadow=shadow,
                      champion=champion, user=user)


def _start(*, name: str, challenger: ModelVersion, traffic_share: float, shadow: bool,
           champion: ModelVersion | None, user: AbstractBaseUser | AnonymousUser | None) -> Experiment:
    champion = champion or serving.champion(fresh=True)  # another process may have promoted within the TTL
    if Experiment.objects.filter(name=name).exists():  # checked under the lock: a double click meets it here
        raise ExperimentNameTaken({"name": f"an experiment named {name!r} exists already"})
    if champion is None:
        raise serving.NoChampion("an experiment needs a champion")
    actor = user if user is not None and user.is_authenticated else None
    if challenger.pk == champion.pk:
        raise ValidationError({"challenger": f"version {challenger.version} is the champion: an experiment compares "
                                             "a challenger with the champion"})
    with transaction.atomic():
        for old in Experiment.objects.select_for_update().filter(active=True):
            end_in_transaction(experiment=old, user=user)
        exp = Experiment(name=name, champion=champion, challenger=challenger, traffic_share=traffic_share,
                         shadow=shadow, created_by=actor)
        exp.full_clean()
        exp.save()
        audit_record(actor=user, action="experiment.started", obj=exp,
                     changes={"champion": champion.version, "challenger": challenger.version,
                              "traffic_share": traffic_share, "shadow": shadow})
        rescore_after_commit()  # the challenger's share of households now has a champion's answer
    serving.forget()
    return exp


def experiment_change(*, experiment: Experiment, user: AbstractBaseUser | AnonymousUser | None,
                      traffic_share: float, shadow: bool) -> Experiment:
    """Ramp the share or switch shadow mode on a running experiment: audited as [before, after] per
    changed attribute; nothing written when nothing changes.  Buckets never move: a ramp only moves
    the line between them."""
    with transaction.atomic():
        current = Experiment.objects.select_for_update().get(pk=experiment.pk)
        changes = {k: [getattr(current, k), v] for k, v in (("traffic_share", traffic_share), ("shadow", shadow))
                   if getattr(current, k) != v}
        if not changes or not current.active:
            return current
        current.traffic_share, current.shadow = traffic_share, shadow
        current.full_clean()
        current.save(update_fields=["traffic_share", "shadow"])
        audit_record(actor=user, action="experiment.changed", obj=current, changes=changes)
        rescore_after_commit()  # a ramp moves households between the arms; shadow mode, which arm answers
    serving.forget()
    return current


def rescore_after_commit() -> None:
    """The model that answers some households changed (a promotion, a rollback, an experiment
    started, ramped or ended): their predictions are stale from the commit on, and the batch job
    scores them then, rather than at its nightly run.  Inside the change's transaction (outbox)."""
    outbox_enqueue("modelling.predict_batch")


def experiment_end(*, experiment: Experiment, user: AbstractBaseUser | AnonymousUser | None = None,
                   reason: str = "") -> Experiment:
    with transaction.atomic():
        current, ended = end_in_transaction(experiment=experiment, user=user, reason=reason)
        if ended:
            rescore_after_commit()
    serving.forget()
    return current


def end_in_transaction(*, experiment: Experiment, user: AbstractBaseUser | AnonymousUser | None,
                       reason: str = "") -> tuple[Experiment, bool]:
    """End ``experiment`` inside the caller's transaction (a promotion or a new experiment, which
    schedule the rescoring themselves): its current row, and whether this call ended it."""
    current = Experiment.objects.select_for_update().get(pk=experiment.pk)
    ended = current.active  # else ended meanwhile (a second click, a promotion): once is the record
    if ended:
        current.active = False
        current.ended_at = timezone.now()
        current.save(update_fields=["active", "ended_at"])
        audit_record(actor=user, action="experiment.ended", obj=current, changes={"reason": reason} if reason else {})
    experiment.active, experiment.ended_at = current.active, current.ended_at
    return current, ended


def _metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float] | None:
    if len(y) < 10 or len(set(y.tolist())) < 2:
        return None
    m = evaluate(y, p)
    return {k: round(float(m[k]), 4) for k in ("roc_auc", "brier", "accuracy", "exclusion_error_at_40")}


def experiment_report(experiment: Experiment) -> dict[str, Any]:
    """What each arm answered, how often the two models agree, and how they compare on labelled records.

    Agreement and the paired comparison score the experiment's records with both models now (the
    same rows for both, so the difference is the models'); the per-arm figures use what was served."""
    served = dict(Prediction.objects.filter(experiment=experiment).values_list("variant")
                  .annotate(n=Count("id")).values_list("variant", "n"))
    record_ids = list(Prediction.objects.filter(experiment=experiment, record__isnull=False)
                      .values_list("record_id", flat=True).distinct()[:REPORT_MAX_RECORDS])
    report: dict[str, Any] = {"experiment": experiment.name, "mode": "shadow" if experiment.shadow else "ab",
                              "traffic_share": experiment.traffic_share, "active": experiment.active,
                              "champion": experiment.champion.version, "challenger": experiment.challenger.version,
                              "served": served, "records": len(record_ids)}
    if not record_ids:
        return report
    frame = serving.records_frame(SurveyRecord.objects.filter(pk__in=record_ids).order_by("pk"))
    champion = serving.model_for(experiment.champion).score(frame, explain=False)
    challenger = serving.model_for(experiment.challenger).score(frame, explain=False)
    report["agreement"] = {
        "vulnerable": round(float((champion.predicted_vulnerable == challenger.predicted_vulnerable).mean()), 4),
        "status": round(float((champion.predicted_status == challenger.predicted_status).mean()), 4),
        "mean_abs_probability_difference": round(float(np.abs(champion.p_vulnerable - challenger.p_vulnerable).mean()), 4),
    }
    # The metric differences are on labelled, approved records neither model trained on (no version
    # of them): on its own training rows a model looks better than it is.
    labels = dict(SurveyRecord.objects.filter(pk__in=record_ids, vulnerable__isnull=False,
                                              review_status=SurveyRecord.ReviewStatus.APPROVED)
                  .values_list("pk", "vulnerable"))
    labelled = frame["_record"].map(lambda r: r in labels).to_numpy(dtype=bool)
    unseen = unseen_by(frame["_record"].to_numpy(), experiment.champion, experiment.challenger)
    mask = labelled & unseen if unseen is not None else labelled
    y = np.array([int(labels[r]) for r in frame["_record"][mask]])
    ours, theirs = _metrics(y, champion.p_vulnerable[mask]), _metrics(y, challenger.p_vulnerable[mask])
    paired: dict[str, Any] = {"labelled": int(mask.sum()), "champion": ours, "challenger": theirs,
                              "left_out_as_trained_on": int((labelled & ~mask).sum())}
    if ours and theirs:
        paired["difference"] = {k: round(theirs[k] - ours[k], 4) for k in ours}
    report["paired"] = paired
    arms: dict[str, Any] = {}
    for variant in (Prediction.Variant.CHAMPION, Prediction.Variant.CHALLENGER, Prediction.Variant.SHADOW):
        rows = list(Prediction.objects.filter(experiment=experiment, variant=variant, record__vulnerable__isnull=False)
                    .values_list("probability_vulnerable", "record__vulnerable"))
        if rows:
            arr = np.array(rows, dtype=float)
            arms[str(variant)] = {"labelled": len(rows), "metrics": _metrics(arr[:, 1].astype(int), arr[:, 0])}
    report["served_on_labelled"] = arms
    return report
