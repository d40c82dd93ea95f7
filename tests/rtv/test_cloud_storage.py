"""The data areas in the cloud: S3 through moto's server, Azure Blob Storage through Azurite, each
spoken to over HTTP on loopback by django-storages, and read back here with the cloud's own SDK.

A file, a partner's inbox, a device request, a feature snapshot and a prediction export each land
where they would on local disk (raw/ processed/ predictions/ archive/), and the file is processed
from there."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from django.core.files.storage import default_storage

from ingestion.models import IngestionBatch, Partner, SurveyRecord
from ingestion.synthetic.generator import generate, write
from tests.conftest import REPO
from tests.payloads import household_payload

pytestmark = pytest.mark.django_db

# Azurite's well-known development account (documented by Microsoft; not a secret).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    _wait_for(port)
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A connection string to an Azurite blob service (``make test`` installs Azurite with npm and
    names it in RTV_AZURITE; a run without it skips, saying so)."""
    exe = os.environ.get("RTV_AZURITE") or str(REPO / "var" / "tools" / "node_modules" / ".bin" / "azurite-blob")
    if not Path(exe).exists():
        if os.environ.get("RTV_AZURITE"):
            pytest.fail(f"RTV_AZURITE names {exe}, which does not exist")
        pytest.skip("Azurite is not installed here (make test installs it under var/tools)")
    port = _free_port()
    proc = subprocess.Popen([exe, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--silent",
                             "--skipApiVersionCheck", "--location", str(tmp_path_factory.mktemp("azurite"))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(port)
        yield (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
               f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class Cloud:
    """One fresh bucket or container, and its contents as the cloud's own SDK sees them."""

    kind: str
    client: Any

    def keys(self, prefix: str = "") -> list[str]:
        if self.kind == "s3":
            return sorted(o.key for o in self.client.objects.filter(Prefix=prefix))
        return sorted(b.name for b in self.client.list_blobs(name_starts_with=prefix))

    def read(self, key: str) -> bytes:
        if self.kind == "s3":
            return bytes(self.client.Object(key).get()["Body"].read())
        return bytes(self.client.download_blob(key).readall())

    def put(self, key: str, data: bytes) -> None:
        if self.kind == "s3":
            self.client.put_object(Key=key, Body=data)
        else:
            self.client.upload_blob(key, data)


@pytest.fixture(params=["s3", "azure"])
def cloud(request: pytest.FixtureRequest, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Cloud:
    """The platform's storage pointed at a new bucket (S3) or container (Azure), as production's
    RTV_STORAGE builds it."""
    name = f"rtv-{uuid.uuid4().hex[:12]}"
    if request.param == "s3":
        import boto3

        endpoint = request.getfixturevalue("s3_endpoint")
        for var, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(var, value)
        monkeypatch.setenv("S3_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("S3_BUCKET", name)
        bucket = boto3.resource("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
        made = Cloud("s3", bucket)
    else:
        from azure.storage.blob import BlobServiceClient

        connection = request.getfixturevalue("azurite")
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection)
        monkeypatch.setenv("AZURE_CONTAINER", name)
        made = Cloud("azure", BlobServiceClient.from_connection_string(connection).create_container(name))
    from rtv.settings.base import data_storage

    settings.STORAGES = {**settings.STORAGES, "default": data_storage(request.param)}
    return made


@pytest.fixture
def survey_csv(tmp_path: Path) -> Path:
    data, errors = generate(240, seed=8, bad_rate=0.05)
    path = tmp_path / "survey.csv"
    write(data, errors, path, "csv")
    return path


def test_an_upload_is_kept_in_the_cloud_and_processed_from_there(cloud: Cloud, api: Any, survey_csv: Path,
                                                                  settings: Any, django_capture_on_commit_callbacks: Any) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.RTV_CHUNK_ROWS = 100  # three chunks under temp/, each read back from the cloud
    manager = api("data_manager")
    with django_capture_on_commit_callbacks(execute=True):
        resp = manager.post("/api/v1/uploads/", {"file": SimpleUploadedFile("survey.csv", survey_csv.read_bytes())},
                            format="multipart")
    assert resp.status_code == 202, resp.content
    batch = IngestionBatch.objects.get(pk=resp.json()["ingestion_id"])
    assert batch.status == "succeeded", batch.error
    assert batch.accepted == SurveyRecord.objects.count() > 200 and batch.rejected > 0
    assert cloud.keys("raw/") == [f"raw/{batch.pk}/original.csv"] == [batch.file_key]
    assert cloud.read(batch.file_key) == survey_csv.read_bytes()
    assert cloud.keys("temp/") == []  # the chunks are gone once stored
    report = manager.get(f"/api/v1/uploads/{batch.pk}/errors.csv")
    assert report.status_code == 200 and b"row" in b"".join(report.streaming_content)


def test_partner_files_dropped_in_the_cloud_inbox_are_taken_and_unreadable_ones_archived(
        cloud: Cloud, survey_csv: Path, django_capture_on_commit_callbacks: Any) -> None:
    from ingestion.inbox import inbox_scan

    Partner.objects.create(name="Hope Uganda", slug="hope")
    cloud.put("inbox/hope/2026-11/survey.csv", survey_csv.read_bytes())
    cloud.put("inbox/hope/notes.docx", b"not a survey")
    with django_capture_on_commit_callbacks(execute=True):
        assert inbox_scan() == 1
    [batch] = IngestionBatch.objects.filter(partner__slug="hope")
    assert batch.status == "succeeded" and batch.original_name == "survey.csv" and batch.accepted > 200
    assert cloud.read(batch.file_key) == survey_csv.read_bytes()
    assert cloud.keys("inbox/") == []  # taken: the original lives on under raw/
    assert cloud.keys("archive/inbox/hope/") == ["archive/inbox/hope/notes.docx"]


def test_device_requests_snapshots_and_prediction_exports_land_in_the_cloud(cloud: Cloud, api: Any,
                                                                            survey_csv: Path) -> None:
    from ingestion.services import ingest_file
    from ingestion.submissions import device_body
    from ingestion.tasks import after_submissions_task
    from modelling.batch import predictions_batch
    from modelling.services import model_train

    ingest_file(survey_csv)
    version = model_train(folds=2)
    snapshot = version.snapshot
    assert snapshot is not None and cloud.keys("processed/") == [snapshot.file_key]
    assert len(pd.read_parquet(io.BytesIO(cloud.read(snapshot.file_key)))) == snapshot.rows

    rows = generate(1, seed=3, bad_rate=0.0)[0]
    raw = json.dumps({"submission_id": str(uuid.uuid4()), "collected_at": "2026-11-20T10:15:00+03:00",
                      "location": {"lat": -0.91, "lon": 29.8}, "data": household_payload(rows, 0)}).encode()
    created = api("field_officer").post("/api/v1/submissions/", raw, content_type="application/json")
    assert created.status_code == 201
    after_submissions_task.apply(args=[[created.json()["id"]]]).get()
    device = SurveyRecord.objects.get(pk=created.json()["id"]).batch
    assert device.file_key == f"raw/{device.pk}/original.json.zlib.fernet" and device.file_key in cloud.keys("raw/")
    assert device_body(device) == raw
    from tests.ingestion.test_submissions import assert_encrypted

    assert_encrypted(cloud.read(device.file_key), raw)

    run = predictions_batch(everything=True)
    assert run["export"] in cloud.keys("predictions/")
    exported = pd.read_parquet(io.BytesIO(cloud.read(run["export"])))
    assert len(exported) == run["scored"] == SurveyRecord.objects.count()
    assert default_storage.exists(run["export"])
