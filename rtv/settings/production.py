"""Production: PostgreSQL, Redis, S3 or Azure Blob Storage.  Refuses to start without its secrets."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import data_storage, database_config, env

_INSECURE_MARKERS = ("insecure", "change-me", "changeme", "secret")
_LOCAL_DEFAULT_KEY = "e1GzCJ3IkY8M2pbYy8G0tq7_2iWSl2k4sTjkQ3n9zVQ="


def _require(name: str) -> str:
    value = env.str(name, default="")
    if not value:
        raise ImproperlyConfigured(f"{name} must be set in production")
    return value


SECRET_KEY = _require("SECRET_KEY")
if (len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 16
        or any(m in SECRET_KEY.lower() for m in _INSECURE_MARKERS)):
    raise ImproperlyConfigured("SECRET_KEY is unsafe: use 50+ random characters")

DATABASE_URL = _require("DATABASE_URL")
DATABASES = {"default": database_config(DATABASE_URL)}
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured("production needs PostgreSQL (DATABASE_URL=postgres://...)")

ALLOWED_HOSTS = [h.strip() for h in _require("ALLOWED_HOSTS").split(",") if h.strip()]
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS names no host")
if "*" in ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS='*' is unsafe in production")


def _key_bytes(key: str) -> bytes:
    """A Fernet key's 32 bytes, however its base64 is written (Fernet accepts '+/' for '-_')."""
    try:
        return base64.urlsafe_b64decode(key.encode())
    except (binascii.Error, ValueError) as exc:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS holds an invalid Fernet key") from exc


FIELD_ENCRYPTION_KEYS = [k.strip() for k in _require("FIELD_ENCRYPTION_KEYS").split(",") if k.strip()]
if not FIELD_ENCRYPTION_KEYS:
    raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS holds no key")
for _key in FIELD_ENCRYPTION_KEYS:
    try:
        Fernet(_key)
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS holds an invalid Fernet key") from exc
    if _key_bytes(_key) == _key_bytes(_LOCAL_DEFAULT_KEY):
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS uses the public development key")
    if len(set(_key_bytes(_key))) < 16:  # 32 random bytes have ~27 distinct values; zeros have one
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS holds a key that is not random "
                                   "(make one with Fernet.generate_key())")

# The registry of record: without it MLflow would silently fall back to a SQLite file inside the
# container, and a SQLite or file store given here would do the same by choice.
MLFLOW_TRACKING_URI = _require("MLFLOW_TRACKING_URI")
_mlflow_scheme = MLFLOW_TRACKING_URI.split(":", 1)[0].lower()
if _mlflow_scheme not in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2", "http", "https"):
    raise ImproperlyConfigured("MLFLOW_TRACKING_URI must be PostgreSQL (its own database) or an MLflow server, "
                               f"not {_mlflow_scheme!r}")
if _mlflow_scheme == "postgres":  # as DATABASE_URL may be written; SQLAlchemy, which MLflow uses, knows only this name
    MLFLOW_TRACKING_URI = "postgresql" + MLFLOW_TRACKING_URI[len("postgres"):]
if _mlflow_scheme.startswith("postgres"):
    _mlflow_db = database_config(MLFLOW_TRACKING_URI.replace("+psycopg2", "").replace("+psycopg", ""))
    _app_db = DATABASES["default"]
    def _where(db: dict[str, Any]) -> tuple[str, str, str]:
        return str(db.get("HOST") or "localhost"), str(db.get("PORT") or 5432), str(db.get("NAME") or "")

    if _where(_mlflow_db) == _where(_app_db):
        # MLflow's own tables and migrations (experiments, runs, alembic_version) in the platform's database
        raise ImproperlyConfigured("MLFLOW_TRACKING_URI must name its own database, not the platform's (DATABASE_URL)")

DEBUG = False
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 7200}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}

STORAGES = {  # S3 unless RTV_STORAGE says otherwise (azure; local only for a single-machine install)
    "default": data_storage(env.str("RTV_STORAGE", default="s3")),
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
# HTTPS only: plain HTTP is redirected, and browsers are told to keep to HTTPS.  The container's
# HEALTHCHECK and the Prometheus scrape call in over plain HTTP inside the network: exempt.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)

SENTRY_DSN = env.str("SENTRY_DSN", default="")
if SENTRY_DSN:
    import sentry_sdk

    sentry_sdk.init(dsn=SENTRY_DSN, send_default_pii=False, traces_sample_rate=env.float("SENTRY_TRACES", default=0.0))
