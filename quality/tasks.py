"""Scheduled quality jobs."""

from __future__ import annotations

from celery import shared_task

from rtv.services import pipeline_run

from .services import quality_snapshot_take


@shared_task(name="quality.daily_snapshot", time_limit=3600, soft_time_limit=3500)
def daily_snapshot_task() -> int:
    """01:00 Africa/Kampala: re-validate yesterday's records with today's rules."""
    with pipeline_run("quality_daily_snapshot") as run:
        snap = quality_snapshot_take()
        run.counts = {"records": snap.records, "errors": snap.errors, "warnings": snap.warnings}
    return int(snap.records)
