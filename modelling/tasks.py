"""Thin Celery wrappers around modelling services."""

from __future__ import annotations

from celery import shared_task

from .services import model_train, predictions_score


@shared_task(name="modelling.train_and_score", time_limit=3600, soft_time_limit=3500, acks_late=True)
def train_and_score_task() -> int:
    mv = model_train()
    predictions_score(mv)
    return mv.version
