"""The schedule celery-beat runs: each entry names a task the worker knows, and the database
scheduler the platform runs with installs every entry at the times the issues name (Kampala time)."""

from __future__ import annotations

import pytest
from django.conf import settings
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from rtv.celery import app

pytestmark = pytest.mark.django_db


def test_every_scheduled_entry_names_a_registered_task() -> None:
    app.loader.import_default_modules()  # as a worker does at start: every app's tasks module
    unknown = {name: e["task"] for name, e in settings.CELERY_BEAT_SCHEDULE.items() if e["task"] not in app.tasks}
    assert unknown == {}


# The scheduler closes the connection it finds (as between beats): outside a test transaction.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_database_scheduler_installs_each_entry_at_its_time() -> None:
    DatabaseScheduler(app=app)  # what `celery beat` builds at start: it writes the entries it is given
    tasks = {t.name: t for t in PeriodicTask.objects.select_related("crontab", "interval")}
    assert set(settings.CELERY_BEAT_SCHEDULE) <= set(tasks)
    every = {name: (t.interval.every, t.interval.period) for name, t in tasks.items() if t.interval}
    assert every["outbox-sweep"] == (60, "seconds")  # the broker outage's work goes out within a minute
    assert every["resume-stale-chunks"] == (120, "seconds") and every["scan-partner-inboxes"] == (300, "seconds")
    assert every["keep-device-requests"] == (300, "seconds")
    daily = {name: (t.crontab.hour, t.crontab.minute, str(t.crontab.timezone)) for name, t in tasks.items() if t.crontab}
    assert daily["model-monitoring"] == ("3", "0", "Africa/Kampala")  # issue 6: 03:00 Africa/Kampala
    assert daily["predict-batch"] == ("2", "30", "Africa/Kampala")
    assert daily["retrain-triggers"][:2] == ("2", "0")
    assert all(t.enabled for t in tasks.values() if t.name in settings.CELERY_BEAT_SCHEDULE)
