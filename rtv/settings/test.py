"""The test suite: PostgreSQL from DATABASE_URL (make test provides it), eager Celery by default."""

from .base import *  # noqa: F403
from .base import env

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed: tests only
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=True)
CELERY_TASK_EAGER_PROPAGATES = True
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
RTV_QUALITY_REFERENCE_SECONDS = 0.0  # each test sees the records it stored
# Every test signs in from 127.0.0.1, hundreds a minute: no limit, except where a test sets one.
RTV_SIGN_IN_RATE_PER_ACCOUNT = None
RTV_SIGN_IN_RATE_PER_ADDRESS = None
RTV_METRICS_CACHE_SECONDS = 0  # each scrape in a test reads the database afresh
