"""Thin Celery wrappers around modelling services."""

from __future__ import annotations

from celery import shared_task

from .services import model_train, predictions_score


@shared_task(name="modelling.train_and_score", time_limit=3600, soft_time_limit=3500, acks_late=True)
def train_and_score_task() -> int:
    mv = model_train()
    predictions_score(mv)
    return mv.version


@shared_task(name="modelling.evaluate_triggers", time_limit=1800, soft_time_limit=1750)
def evaluate_triggers_task() -> list[str]:
    """Daily: decide whether to retrain (new samples, degradation, drift, schedule); stored with inputs."""
    from rtv.services import pipeline_run

    from .triggers import retrain_triggers_evaluate

    with pipeline_run("retrain_triggers") as run:
        decision = retrain_triggers_evaluate()
        run.counts = {"fired": decision.fired}
    return list(decision.fired)
