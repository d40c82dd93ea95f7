"""Platform housekeeping jobs."""

from __future__ import annotations

from celery import shared_task

from .outbox import outbox_sweep


@shared_task(name="rtv.outbox_sweep", time_limit=120, soft_time_limit=110)
def outbox_sweep_task() -> int:
    """Send outbox messages that were not sent after commit (broker down, process died); and mark
    the runs a dead process left "running" as failed."""
    from .services import pipeline_runs_abandon

    pipeline_runs_abandon()
    return outbox_sweep()


@shared_task(name="rtv.deliver_alerts", time_limit=300, soft_time_limit=280)
def deliver_alerts_task() -> dict[str, int]:
    """Send new quality and model alerts by email and Slack (rtv.alerts)."""
    from rtv.services import pipeline_run

    from .alerts import alerts_deliver, channels

    if not channels():  # nothing to deliver through: no run to record every five minutes
        return {"sent": 0, "repeats": 0, "failed": 0}
    with pipeline_run("deliver_alerts") as run:
        run.counts = alerts_deliver()
    return run.counts
