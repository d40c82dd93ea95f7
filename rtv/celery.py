"""The Celery app; tasks live beside their app (``<app>/tasks.py``)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtv.settings.local")

app = Celery("rtv")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
