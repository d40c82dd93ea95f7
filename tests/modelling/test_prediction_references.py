"""A prediction always names a record and a model version that exist.  The table has no database
foreign key on them (PostgreSQL's row-by-row check cost a batch as much as its COPY); the one write
path checks and locks them per write instead, and Django's on_delete keeps deletions consistent."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import pytest
from django.db import OperationalError, connection, connections, transaction
from django.db.models.deletion import ProtectedError
from django.utils import timezone

from ingestion.models import SurveyRecord
from ingestion.services import ingest_file
from ingestion.synthetic.generator import generate, write
from modelling.models import ModelVersion, Prediction
from modelling.serving import MissingReference, predictions_write
from rtv.bulk import references_lock


@pytest.fixture
def records(tmp_path: Path) -> list[int]:
    data, _ = generate(5, seed=8, bad_rate=0.0)
    ingest_file(write(data, data.iloc[0:0], tmp_path / "a.csv", "csv"))
    return list(SurveyRecord.objects.order_by("pk").values_list("pk", flat=True))


@pytest.fixture
def version() -> ModelVersion:
    return ModelVersion.objects.create(name="rtv-vulnerability", version=1, mlflow_run_id="r", model_uri="m",
                                       algorithm="lightgbm")


def rows(record_ids: list[int | None], model_version_id: int) -> pd.DataFrame:
    """Predictions as the scoring code hands them to the write path."""
    n = len(record_ids)
    return pd.DataFrame({
        "record_id": pd.array(record_ids, dtype="Int64"), "household_id": [f"HH{i}" for i in range(n)],
        "model_version_id": model_version_id, "probability_vulnerable": 0.4, "predicted_vulnerable": False,
        "predicted_status": "At Risk", "status_probabilities": "{}", "margin": 0.1, "borderline": False,
        "prediction_set": "[]", "reasons": "[]", "variant": "champion", "experiment_id": pd.array([None] * n, dtype="Int64"),
        "bucket": pd.array([None] * n, dtype="Int64"), "source": "batch", "payload": None,
        "requested_by_id": pd.array([None] * n, dtype="Int64"),
        "created_at": pd.Series(pd.Timestamp(timezone.now()), index=range(n), dtype="datetime64[ns, UTC]"),
    })


@pytest.mark.django_db
def test_predictions_for_existing_records_and_version_are_written(records, version) -> None:  # type: ignore[no-untyped-def]
    assert predictions_write(rows([*records, None], version.pk)) == len(records) + 1
    assert Prediction.objects.filter(record__isnull=False).count() == len(records)


@pytest.mark.django_db
def test_a_write_naming_a_missing_record_is_refused_whole_and_says_which(records, version) -> None:  # type: ignore[no-untyped-def]
    gone = max(records) + 1000
    with pytest.raises(MissingReference, match=rf"record_id \[{gone}\]"):
        predictions_write(rows([*records, gone], version.pk))
    assert not Prediction.objects.exists()  # the valid rows of a refused write are not half-written


@pytest.mark.django_db
def test_a_write_naming_a_missing_model_version_is_refused(records, version) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MissingReference, match=rf"model_version_id \[{version.pk + 1}\]"):
        predictions_write(rows(records, version.pk + 1))
    assert not Prediction.objects.exists()


@pytest.mark.django_db
def test_deleting_a_record_deletes_its_predictions_and_a_used_model_version_is_kept(records, version) -> None:  # type: ignore[no-untyped-def]
    predictions_write(rows(records, version.pk))
    SurveyRecord.objects.filter(pk=records[0]).delete()
    assert not Prediction.objects.filter(record_id=records[0]).exists()
    assert Prediction.objects.count() == len(records) - 1
    with pytest.raises(ProtectedError):
        version.delete()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_write_under_way_keeps_the_records_it_names_from_being_deleted(records) -> None:  # type: ignore[no-untyped-def]
    """The lock taken before writing is the one PostgreSQL's foreign-key check takes: a concurrent
    delete of the record waits for the write's transaction (here: until its lock timeout)."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's (SQLite has one writer at a time)")
    locked, done = threading.Event(), threading.Event()

    def writer() -> None:
        try:
            with transaction.atomic():
                assert references_lock({SurveyRecord: records[:2]}) == {}
                locked.set()
                done.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert locked.wait(10)
        with pytest.raises(OperationalError, match="lock timeout"), transaction.atomic(), connection.cursor() as cur:
            cur.execute("SET LOCAL lock_timeout = '300ms'")
            cur.execute("DELETE FROM ingestion_surveyrecord WHERE id = %s", [records[0]])
        with transaction.atomic(), connection.cursor() as cur:  # a record the write does not name is free
            cur.execute("SET LOCAL lock_timeout = '300ms'")
            cur.execute("SELECT 1 FROM ingestion_surveyrecord WHERE id = %s FOR UPDATE", [records[2]])
    finally:
        done.set()
        thread.join()


@pytest.mark.django_db
def test_the_lock_reports_every_missing_key_once_per_model(records, version) -> None:  # type: ignore[no-untyped-def]
    assert references_lock({SurveyRecord: []}) == {}
    assert references_lock({SurveyRecord: [records[0], records[0]], ModelVersion: [version.pk]}) == {}
    assert references_lock({SurveyRecord: [10**9, records[1], 10**9 + 1, 10**9], ModelVersion: [version.pk]}) == {
        SurveyRecord: [10**9, 10**9 + 1]}
    assert references_lock({SurveyRecord: records, ModelVersion: [version.pk + 5]}) == {ModelVersion: [version.pk + 5]}
