"""Benchmark settings: production-like (PostgreSQL, Redis broker, persistent connections), its own
database so a benchmark never touches real data."""

from rtv.settings.base import *  # noqa: F403
from rtv.settings.base import database_config, env

DEBUG = False
DATABASES = {"default": database_config(env.str("BENCH_DATABASE_URL",
                                                  default="postgres://postgres@127.0.0.1:5432/rtv_bench"))}
ROOT_URLCONF = "bench.urls"
ALLOWED_HOSTS = ["*"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_BROKER_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/14")
CELERY_BROKER_TRANSPORT_OPTIONS = {}
CELERY_TASK_ALWAYS_EAGER = False
LOGGING = {"version": 1, "disable_existing_loggers": True, "root": {"level": "ERROR", "handlers": []}}
MIDDLEWARE = [m for m in MIDDLEWARE if "prometheus" not in m]  # noqa: F405
