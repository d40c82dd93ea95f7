"""Platform housekeeping jobs."""

from __future__ import annotations

from celery import shared_task

from .outbox import outbox_sweep


@shared_task(name="rtv.outbox_sweep", time_limit=120, soft_time_limit=110)
def outbox_sweep_task() -> int:
    """Send outbox messages that were not sent after commit (broker down, process died)."""
    return outbox_sweep()
