"""MLflow access: one place that knows the tracking URI, the experiment and the aliases."""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings

CHAMPION = "champion"
CHALLENGER = "challenger"
# Promotions, rollbacks, experiments and new challengers change who answers: one at a time (rtv.locks).
ROLLOUT_LOCK = "modelling.rollout"


def configure() -> Any:
    import mlflow

    uri = settings.MLFLOW_TRACKING_URI
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow


def experiment_id() -> str:
    mlflow = configure()
    exp = mlflow.get_experiment_by_name(settings.MLFLOW_EXPERIMENT)
    if exp is not None:
        return str(exp.experiment_id)
    root = settings.MLFLOW_ARTIFACT_ROOT
    location = root if "://" in root else Path(root).resolve().as_uri()
    return str(mlflow.create_experiment(settings.MLFLOW_EXPERIMENT, artifact_location=location))


def client() -> Any:
    configure()
    from mlflow import MlflowClient

    return MlflowClient()


def set_alias(name: str, alias: str, version: int) -> None:
    client().set_registered_model_alias(name, alias, str(version))


def alias_version(name: str, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


@lru_cache(maxsize=8)
def _load(uri: str) -> Any:
    import mlflow.sklearn

    from rtv.warmup import settle

    configure()
    model = mlflow.sklearn.load_model(uri)
    settle()  # long-lived: out of the collector's way (a full collection would walk it on a request)
    return model


_LOADING = threading.Lock()  # threads asking for a model not yet loaded (the batch job's, a threaded server): one loads it


def load_model(name: str, version: int) -> Any:
    """Loaded once per process per resolved version (never per request)."""
    with _LOADING:
        return _load(f"models:/{name}/{version}")
