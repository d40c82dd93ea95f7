"""Settings shared by every environment, read from the environment (django-environ).

Embedded defaults need no service: SQLite (WAL) under ``var/``, local files under
``var/data/``, MLflow in a SQLite file, and Celery on kombu's filesystem transport with
a real worker process.  ``production.py`` swaps in PostgreSQL, Redis and S3 and refuses
to start without its secrets.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

VAR_DIR = Path(env.str("RTV_VAR_DIR", default=str(BASE_DIR / "var")))
DATA_DIR = Path(env.str("RTV_DATA_DIR", default=str(VAR_DIR / "data")))
# The storage hierarchy every door writes into (local files here, S3/Azure in production).
STORAGE_AREAS = ("raw", "validated", "processed", "predictions", "archive", "temp", "inbox")

SECRET_KEY = env.str("SECRET_KEY", default="insecure-local-only-key-change-me-0123456789abcdef")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "corsheaders",
    "django_prometheus",
    "rtv",
    "ingestion",
    "quality",
    "features",
    "modelling",
]

MIDDLEWARE = [
    "rtv.middleware.RequestSanityMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "rtv.middleware.RequestIdMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "rtv.urls"
WSGI_APPLICATION = "rtv.wsgi.application"
ASGI_APPLICATION = "rtv.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def database_config(url: str | None) -> dict[str, object]:
    """A DATABASE_URL, or the embedded SQLite file (WAL: readers never block the writer)."""
    if url:
        cfg: dict[str, object] = env.db_url_config(url)
    else:
        cfg = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(VAR_DIR / "rtv.sqlite3")}
    if cfg["ENGINE"] == "django.db.backends.sqlite3":
        cfg["OPTIONS"] = {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000;",
            "transaction_mode": "IMMEDIATE",
        }
    else:
        # Persistent connections: a connection per request cost 2.5x in throughput (stack.md).
        cfg["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
        cfg["CONN_HEALTH_CHECKS"] = True
    return cfg


DATABASES = {"default": database_config(env.str("DATABASE_URL", default="") or None)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "Africa/Kampala"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
LOGIN_URL = "/accounts/login/"  # the pages' sign-in, for staff and partners alike (the admin's is staff only)
LOGIN_REDIRECT_URL = "/"  # rtv.views.home: the first page the person's role opens


def data_storage(kind: str) -> dict[str, object]:
    """The storage of the data areas (raw/ processed/ predictions/ ...), by ``RTV_STORAGE``:
    ``local`` files under RTV_DATA_DIR; ``s3`` (AWS or any S3 API: S3_BUCKET, S3_ENDPOINT_URL,
    S3_REGION, credentials as boto3 reads them); ``azure`` Blob Storage (AZURE_CONTAINER and
    AZURE_STORAGE_CONNECTION_STRING, or AZURE_ACCOUNT_NAME with AZURE_ACCOUNT_KEY).  Nothing is
    overwritten in the cloud: a name taken gets another."""
    if kind == "local":
        return {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(DATA_DIR)}}
    if kind == "s3":
        return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
            "bucket_name": env.str("S3_BUCKET", default="rtv-data"),
            "endpoint_url": env.str("S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("S3_REGION", default="") or None,
            "default_acl": None, "file_overwrite": False}}
    if kind == "azure":
        connection = env.str("AZURE_STORAGE_CONNECTION_STRING", default="")
        account, key = env.str("AZURE_ACCOUNT_NAME", default=""), env.str("AZURE_ACCOUNT_KEY", default="")
        if not connection and not (account and key):
            raise ImproperlyConfigured("RTV_STORAGE=azure needs AZURE_STORAGE_CONNECTION_STRING, "
                                       "or AZURE_ACCOUNT_NAME and AZURE_ACCOUNT_KEY")
        return {"BACKEND": "storages.backends.azure_storage.AzureStorage", "OPTIONS": {
            "azure_container": env.str("AZURE_CONTAINER", default="rtv-data"), "overwrite_files": False,
            **({"connection_string": connection} if connection else {"account_name": account, "account_key": key})}}
    raise ImproperlyConfigured(f"RTV_STORAGE={kind!r}: use local, s3 or azure")


STORAGES = {
    "default": data_storage(env.str("RTV_STORAGE", default="local")),
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# ---- API ---------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rtv.authentication.RoleJWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "rtv.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF's defaults, with a JSON parser that answers a too deeply nested document with a 400.
    "DEFAULT_PARSER_CLASSES": ["rtv.errors.JSONParser", "rest_framework.parsers.FormParser",
                               "rest_framework.parsers.MultiPartParser"],
    # How many proxies in front append to X-Forwarded-For: the client's address is read that far
    # from its end.  0: the connection's own address (a header the client sent is not believed).
    "NUM_PROXIES": env.int("RTV_PROXIES", default=0),
}
# Sign-in attempts (token endpoint, sign-in pages), right or wrong: rtv.throttles.
RTV_SIGN_IN_RATE_PER_ACCOUNT = env.str("RTV_SIGN_IN_RATE_PER_ACCOUNT", default="10/min")
RTV_SIGN_IN_RATE_PER_ADDRESS = env.str("RTV_SIGN_IN_RATE_PER_ADDRESS", default="60/min")
SPECTACULAR_SETTINGS = {
    "TITLE": "RTV household data platform",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # The docs page's script and styles from our own static files (drf-spectacular-sidecar, pinned
    # in requirements.txt): drf-spectacular's default is a CDN's "@latest", whatever it serves that
    # day running on a signed-in page, and nothing at all on an office network without internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # drf-spectacular's own hook, then the API's error answers on every operation.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "rtv.api.openapi.document_errors"],
}
SIMPLE_JWT = {
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    # A password change (or reset by an admin) ends every session: tokens carry a hash of the
    # password, checked on each request and on refresh.
    "CHECK_REVOKE_TOKEN": True,
    "TOKEN_REFRESH_SERIALIZER": "rtv.api.auth.RevocableRefreshSerializer",
}
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])

# ---- Celery ------------------------------------------------------------------------------
# Embedded: kombu's filesystem transport, so a real worker runs without a broker service and
# an upload never blocks the request that sent it.  Production sets REDIS_URL.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 3600
CELERY_TASK_SOFT_TIME_LIMIT = 3300
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# Producers must not hang when the broker is down: the outbox keeps the work for the sweeper.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Device submissions' downstream tasks are published by a per-process relay, merged, after this many
# seconds of gathering (0: each is published inline after its commit).  See rtv.outbox.
RTV_OUTBOX_RELAY_SECONDS = env.float("RTV_OUTBOX_RELAY_SECONDS", default=0.1)
CELERY_BEAT_SCHEDULE = {
    "outbox-sweep": {"task": "rtv.outbox_sweep", "schedule": 60.0},
    "resume-stale-chunks": {"task": "ingestion.resume_stale_chunks", "schedule": 120.0},
    "scan-partner-inboxes": {"task": "ingestion.scan_partner_inboxes", "schedule": 300.0},
    "keep-device-requests": {"task": "ingestion.keep_device_requests", "schedule": 300.0},
    "quality-daily-snapshot": {"task": "quality.daily_snapshot", "schedule": crontab(hour=1, minute=0)},
    "retrain-triggers": {"task": "modelling.evaluate_triggers", "schedule": crontab(hour=2, minute=0)},
    "predict-batch": {"task": "modelling.predict_batch", "schedule": crontab(hour=2, minute=30)},
    "model-monitoring": {"task": "modelling.monitor", "schedule": crontab(hour=3, minute=0)},
    "deliver-alerts": {"task": "rtv.deliver_alerts", "schedule": 300.0},
}

# ---- Domain configuration ---------------------------------------------------------------
# ProgressStatus bands on HHIncome+Consumption+Residues/Day (USD), highest first.
RTV_STATUS_THRESHOLDS = [
    ("On Track", env.float("RTV_THRESHOLD_ON_TRACK", default=2.15)),
    ("At Risk", env.float("RTV_THRESHOLD_AT_RISK", default=1.77)),
    ("Struggling", env.float("RTV_THRESHOLD_STRUGGLING", default=1.25)),
]
if any(high <= low for (_, high), (_, low) in itertools.pairwise(RTV_STATUS_THRESHOLDS)):
    raise ImproperlyConfigured("status thresholds must fall from On Track to Struggling, got "
                               + ", ".join(f"{name} {t}" for name, t in RTV_STATUS_THRESHOLDS))
RTV_STATUS_FLOOR = "Severely Struggling"
RTV_VULNERABLE_STATUSES = ("Struggling", "Severely Struggling")
RTV_IDENTITY_TOLERANCE_ABS = env.float("RTV_IDENTITY_TOLERANCE_ABS", default=0.01)
RTV_IDENTITY_TOLERANCE_REL = env.float("RTV_IDENTITY_TOLERANCE_REL", default=1e-6)
RTV_MAX_SUBMISSION_BYTES = env.int("RTV_MAX_SUBMISSION_BYTES", default=1 << 20)
RTV_MAX_BATCH_BYTES = env.int("RTV_MAX_BATCH_BYTES", default=20 << 20)
RTV_MAX_UPLOAD_BYTES = env.int("RTV_MAX_UPLOAD_BYTES", default=200 << 20)
RTV_MAX_UPLOAD_ROWS = env.int("RTV_MAX_UPLOAD_ROWS", default=1_000_000)
DATA_UPLOAD_MAX_MEMORY_SIZE = RTV_MAX_BATCH_BYTES + (1 << 20)
RTV_CHUNK_ROWS = env.int("RTV_CHUNK_ROWS", default=20_000)
RTV_CHUNK_LEASE_SECONDS = env.int("RTV_CHUNK_LEASE_SECONDS", default=900)  # above process_chunk's time limit (870 s)
RTV_PLAN_LEASE_SECONDS = env.int("RTV_PLAN_LEASE_SECONDS", default=1900)  # above plan_batch's time limit (1800 s)
RTV_PLAN_MAX_ATTEMPTS = env.int("RTV_PLAN_MAX_ATTEMPTS", default=3)  # planners that died on one file: then it fails
# A chunk whose processing raises is tried again (by the sweeper, or at once by ingest_file) up to
# this many times in all, then marked failed: its batch ends failed, naming the rows and the error.
RTV_CHUNK_MAX_ATTEMPTS = env.int("RTV_CHUNK_MAX_ATTEMPTS", default=3)
RTV_TEST_CHUNK_DELAY = env.float("RTV_TEST_CHUNK_DELAY", default=0.0)
RTV_MODEL_NAME = env.str("RTV_MODEL_NAME", default="rtv-vulnerability")
# A challenger is promoted only if it beats the champion by these margins.
RTV_PROMOTION_MARGIN_AUC = env.float("RTV_PROMOTION_MARGIN_AUC", default=0.0)
RTV_PROMOTION_MARGIN_EXCLUSION = env.float("RTV_PROMOTION_MARGIN_EXCLUSION", default=0.0)
RTV_PROMOTION_MARGIN_BRIER = env.float("RTV_PROMOTION_MARGIN_BRIER", default=0.005)
RTV_RETRAIN_NEW_SAMPLES = env.int("RTV_RETRAIN_NEW_SAMPLES", default=50)
RTV_RETRAIN_MIN_EVAL = env.int("RTV_RETRAIN_MIN_EVAL", default=50)
RTV_RETRAIN_AUC_TOLERANCE = env.float("RTV_RETRAIN_AUC_TOLERANCE", default=0.05)
# A queued training counts as pending this long: triggers firing meanwhile do not queue another.
RTV_RETRAIN_PENDING_HOURS = env.float("RTV_RETRAIN_PENDING_HOURS", default=6)
# New records needed before input drift is judged: the PSI of 10 bins has an expected value of
# about 9/n from sampling alone (0.16 at 56 rows, past half the 0.25 "major" line).
RTV_DRIFT_MIN_ROWS = env.int("RTV_DRIFT_MIN_ROWS", default=200)
RTV_DECISION_THRESHOLD = env.float("RTV_DECISION_THRESHOLD", default=0.5)  # calibrated P(vulnerable) that flags
RTV_BORDERLINE_MARGIN = env.float("RTV_BORDERLINE_MARGIN", default=0.1)  # |p - threshold| below: borderline
RTV_CONFORMAL_ALPHA = env.float("RTV_CONFORMAL_ALPHA", default=0.1)  # prediction sets cover 1 - alpha
RTV_MODEL_ALIAS_TTL = env.float("RTV_MODEL_ALIAS_TTL", default=30.0)  # seconds an alias resolution is trusted
RTV_PREDICT_CHUNK_ROWS = env.int("RTV_PREDICT_CHUNK_ROWS", default=25_000)
RTV_MONITOR_WINDOW_DAYS = env.int("RTV_MONITOR_WINDOW_DAYS", default=30)
RTV_MONITOR_MIN_ROWS = env.int("RTV_MONITOR_MIN_ROWS", default=50)
RTV_MONITOR_PSI_ALERT = env.float("RTV_MONITOR_PSI_ALERT", default=0.25)
RTV_MONITOR_AUC_DROP_ALERT = env.float("RTV_MONITOR_AUC_DROP_ALERT", default=0.05)

# Fernet keys, comma-separated; the first one encrypts, all of them decrypt.
FIELD_ENCRYPTION_KEYS = env.list(
    "FIELD_ENCRYPTION_KEYS",
    # A fixed key for local use only: production refuses to start with it.
    default=["e1GzCJ3IkY8M2pbYy8G0tq7_2iWSl2k4sTjkQ3n9zVQ="],
)

# ---- MLflow ------------------------------------------------------------------------------
MLFLOW_TRACKING_URI = env.str("MLFLOW_TRACKING_URI", default=f"sqlite:///{VAR_DIR / 'mlflow.sqlite3'}")
MLFLOW_ARTIFACT_ROOT = env.str("MLFLOW_ARTIFACT_ROOT", default=str(VAR_DIR / "mlartifacts"))
MLFLOW_EXPERIMENT = env.str("MLFLOW_EXPERIMENT", default="rtv-vulnerability")

# ---- Logging -----------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "rtv.logging.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "alembic": {"level": "WARNING"},
        "mlflow": {"level": "WARNING"},
    },
}

# Quality score = weighted mean of its parts (each 0-1).
RTV_QUALITY_WEIGHTS = {"completeness": 0.4, "validity": 0.3, "consistency": 0.3}
RTV_AUTO_APPROVE_SCORE = env.float("RTV_AUTO_APPROVE_SCORE", default=0.9)
# Seconds a process keeps the stored districts' statistics that score a device's values (robust z).
RTV_QUALITY_REFERENCE_SECONDS = env.float("RTV_QUALITY_REFERENCE_SECONDS", default=600.0)
RTV_QUALITY_DROP_ALERT = env.float("RTV_QUALITY_DROP_ALERT", default=0.05)

# ---- Alert delivery (rtv.alerts): email through Django's mail settings, Slack through a webhook --
RTV_ALERT_EMAILS = env.list("RTV_ALERT_EMAILS", default=[])
RTV_ALERT_SLACK_WEBHOOK_URL = env.str("RTV_ALERT_SLACK_WEBHOOK_URL", default="")
RTV_ALERT_TIMEOUT_SECONDS = env.float("RTV_ALERT_TIMEOUT_SECONDS", default=10.0)
RTV_ALERT_MAX_AGE_DAYS = env.int("RTV_ALERT_MAX_AGE_DAYS", default=7)
RTV_BASE_URL = env.str("RTV_BASE_URL", default="")  # links in alerts, e.g. https://rtv.example.org
RTV_METRICS_CACHE_SECONDS = env.int("RTV_METRICS_CACHE_SECONDS", default=60)  # rtv.metrics: the database's figures
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="rtv-platform@localhost")
