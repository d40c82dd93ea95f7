"""Thin Celery wrappers around modelling services."""

from __future__ import annotations

from celery import shared_task

from .batch import predictions_batch
from .services import model_train


@shared_task(name="modelling.train_and_score", time_limit=3600, soft_time_limit=3500, acks_late=True)
def train_and_score_task(user_id: int | None = None) -> int:
    """Train (for the person who asked, when one did); then score what the champion (maybe the new
    version) has not scored yet."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(pk=user_id).first() if user_id is not None else None
    mv = model_train(user=user)
    predictions_batch()
    return mv.version


@shared_task(name="modelling.predict_batch", time_limit=3600, soft_time_limit=3500, acks_late=True)
def predict_batch_task(everything: bool = False) -> int:
    """Nightly (and after a champion change): score every record without a current prediction."""
    from .serving import NoChampion

    try:
        return int(predictions_batch(everything=everything)["scored"])
    except NoChampion:
        return 0


@shared_task(name="modelling.monitor", time_limit=3600, soft_time_limit=3500)
def monitor_task() -> int | None:
    """Daily 03:00 Africa/Kampala: drift of inputs and predictions, performance on new labels."""
    from rtv.services import pipeline_run

    from .monitoring import monitoring_run

    with pipeline_run("monitor") as job:  # a failure is recorded, as every scheduled job's is
        run = monitoring_run()
        job.counts = {"monitoring_run": run.pk if run is not None else None,
                      "alerts": run.alerts.count() if run is not None else 0}
    return run.pk if run is not None else None


@shared_task(name="modelling.evaluate_triggers", time_limit=1800, soft_time_limit=1750)
def evaluate_triggers_task() -> list[str]:
    """Daily: decide whether to retrain (new samples, degradation, drift, schedule); stored with inputs."""
    from rtv.services import pipeline_run

    from .triggers import retrain_triggers_evaluate

    with pipeline_run("retrain_triggers") as run:
        decision = retrain_triggers_evaluate()
        run.counts = {"fired": decision.fired}
    return list(decision.fired)
