"""Production settings refuse to start without their secrets; embedded defaults need no service."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

REPO = Path(__file__).resolve().parents[2]
GOOD = {
    "SECRET_KEY": "k" * 10 + "Zq8#vP2!mW9@xL4$tR7%yN3^bH6&jF1*cD5(eG0)aS" + "u" * 8,
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/rtv",
    "ALLOWED_HOSTS": "rtv.example.org",
    "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    "MLFLOW_TRACKING_URI": "postgresql://mlflow@127.0.0.1:5432/mlflow",
}


def load_settings(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in GOOD and k not in ("DJANGO_SETTINGS_MODULE", "REDIS_URL", "CELERY_BROKER_URL")}
    clean.update(env, DJANGO_SETTINGS_MODULE=module)
    code = "import django; django.setup(); from django.conf import settings; print(settings.DATABASES['default']['ENGINE'])"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean, capture_output=True, text=True,
                          timeout=60)


def test_production_starts_with_its_secrets() -> None:
    proc = load_settings("rtv.settings.production", GOOD)
    assert proc.returncode == 0, proc.stderr
    assert "postgresql" in proc.stdout


@pytest.mark.parametrize("missing", ["SECRET_KEY", "DATABASE_URL", "ALLOWED_HOSTS", "FIELD_ENCRYPTION_KEYS",
                                     "MLFLOW_TRACKING_URI"])
def test_production_refuses_to_start_without_each_secret(missing: str) -> None:
    proc = load_settings("rtv.settings.production", {k: v for k, v in GOOD.items() if k != missing})
    assert proc.returncode != 0
    assert "ImproperlyConfigured" in proc.stderr and missing in proc.stderr


@pytest.mark.parametrize(("name", "value"), [
    ("SECRET_KEY", "insecure-local-only-key-change-me-0123456789abcdef"),
    ("SECRET_KEY", "short"),
    ("FIELD_ENCRYPTION_KEYS", "not-a-fernet-key"),
    ("FIELD_ENCRYPTION_KEYS", "e1GzCJ3IkY8M2pbYy8G0tq7_2iWSl2k4sTjkQ3n9zVQ="),
    ("ALLOWED_HOSTS", "*"),
    ("DATABASE_URL", "sqlite:////tmp/x.sqlite3"),
    # the same values written another way
    ("SECRET_KEY", "a" * 60),  # long, not random
    ("FIELD_ENCRYPTION_KEYS", "e1GzCJ3IkY8M2pbYy8G0tq7/2iWSl2k4sTjkQ3n9zVQ="),  # the development key, '/' for '_'
    ("FIELD_ENCRYPTION_KEYS", base64.urlsafe_b64encode(bytes(32)).decode()),  # valid, and all zeros
    ("FIELD_ENCRYPTION_KEYS", ",,"),
    ("ALLOWED_HOSTS", ","),
    ("ALLOWED_HOSTS", " *"),
    ("MLFLOW_TRACKING_URI", "sqlite:////tmp/mlflow.sqlite3"),
    ("MLFLOW_TRACKING_URI", "/srv/mlruns"),
    ("MLFLOW_TRACKING_URI", "postgresql://postgres@127.0.0.1:5432/rtv"),  # the platform's own database
    ("MLFLOW_TRACKING_URI", "postgresql+psycopg://other@127.0.0.1/rtv"),  # the same, as another user
])
def test_production_refuses_unsafe_values(name: str, value: str) -> None:
    proc = load_settings("rtv.settings.production", {**GOOD, name: value})
    assert proc.returncode != 0
    assert "ImproperlyConfigured" in proc.stderr


def test_an_mlflow_database_written_as_postgres_is_named_as_sqlalchemy_names_it() -> None:
    code = "import django; django.setup(); from django.conf import settings as s; print(s.MLFLOW_TRACKING_URI)"
    clean = {k: v for k, v in os.environ.items() if k not in GOOD and k != "DJANGO_SETTINGS_MODULE"}
    clean.update(GOOD, MLFLOW_TRACKING_URI="postgres://mlflow@db:5432/mlflow", DJANGO_SETTINGS_MODULE="rtv.settings.production")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "postgresql://mlflow@db:5432/mlflow"


def test_production_hosts_are_read_without_their_spaces_and_https_is_enforced() -> None:
    code = ("import django; django.setup(); from django.conf import settings as s; "
            "print(s.ALLOWED_HOSTS, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS > 0, s.SECURE_REDIRECT_EXEMPT)")
    clean = {k: v for k, v in os.environ.items() if k not in GOOD and k != "DJANGO_SETTINGS_MODULE"}
    clean.update(GOOD, ALLOWED_HOSTS="a.org, b.org", DJANGO_SETTINGS_MODULE="rtv.settings.production")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['a.org', 'b.org'] True True ['^healthz$', '^metrics$']"


def test_embedded_defaults_use_sqlite_without_any_service(tmp_path: Path) -> None:
    proc = load_settings("rtv.settings.local", {"RTV_VAR_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "django.db.backends.sqlite3"
    assert {p.name for p in (tmp_path / "data").iterdir()} == {"raw", "validated", "processed", "predictions",
                                                              "archive", "temp", "inbox"}


def storage_backend(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "S3_", "RTV_STORAGE"))
             and k not in GOOD and k not in ("DJANGO_SETTINGS_MODULE", "REDIS_URL", "CELERY_BROKER_URL")}
    clean.update(env, DJANGO_SETTINGS_MODULE=module)
    code = ("import django; django.setup(); from django.core.files.storage import storages; "
            "print(type(storages['default']).__name__)")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize(("module", "env", "backend"), [
    ("rtv.settings.production", GOOD, "S3Storage"),
    ("rtv.settings.production", {**GOOD, "RTV_STORAGE": "azure", "AZURE_STORAGE_CONNECTION_STRING":
                                 "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=Zm9v;EndpointSuffix=core.windows.net"},
     "AzureStorage"),
    ("rtv.settings.production", {**GOOD, "RTV_STORAGE": "azure", "AZURE_ACCOUNT_NAME": "a", "AZURE_ACCOUNT_KEY": "Zm9v"},
     "AzureStorage"),
    ("rtv.settings.local", {}, "FileSystemStorage"),
    ("rtv.settings.local", {"RTV_STORAGE": "s3"}, "S3Storage"),
])
def test_the_data_storage_is_chosen_by_rtv_storage(module: str, env: dict[str, str], backend: str) -> None:
    proc = storage_backend(module, env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == backend


@pytest.mark.parametrize("env", [{"RTV_STORAGE": "azure"}, {"RTV_STORAGE": "azure", "AZURE_ACCOUNT_NAME": "a"},
                                 {"RTV_STORAGE": "gcs"}])
def test_a_storage_without_what_it_needs_refuses_to_start(env: dict[str, str]) -> None:
    proc = storage_backend("rtv.settings.production", {**GOOD, **env})
    assert proc.returncode != 0 and "ImproperlyConfigured" in proc.stderr and "RTV_STORAGE" in proc.stderr
