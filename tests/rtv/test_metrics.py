"""/metrics carries the platform's own figures (rows ingested and rejected, records by review state,
predictions, the champion, the latest monitoring and quality figures, what is waiting), read from
the database, so every web worker reports the same numbers."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from ingestion.services import ingest_file
from ingestion.synthetic.generator import generate, write
from tests.payloads import household_payload

pytestmark = pytest.mark.django_db


def scrape() -> dict[str, float]:
    text = APIClient().get("/metrics").content.decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(rtv_[^ ]+) ([0-9.e+-]+)$", text, re.M)}


def test_the_platforms_figures_are_scraped_and_move_with_what_happens(api, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    before = scrape()
    assert before.get('rtv_outbox_unsent', 0) == 0
    data, errors = generate(60, seed=4, bad_rate=0.05)
    batch = ingest_file(write(data, errors, tmp_path / "f.csv", "csv"))
    rows = generate(5, seed=5, bad_rate=0.0)[0]
    api("field_officer").post("/api/v1/submissions/", {
        "submission_id": str(uuid.uuid4()), "form_version": "2026.1", "collected_at": "2026-11-20T10:15:00+03:00",
        "device_id": "tab-07", "data": household_payload(rows, 0)}, format="json")
    after = scrape()
    assert after['rtv_ingested_rows{channel="command",outcome="accepted"}'] == batch.accepted
    assert after['rtv_ingested_rows{channel="command",outcome="rejected"}'] == batch.rejected > 0
    assert after['rtv_ingested_rows{channel="device",outcome="accepted"}'] == 1
    assert sum(v for k, v in after.items() if k.startswith("rtv_records{")) == batch.accepted + 1
    assert after['rtv_ingestion_batches{status="succeeded"}'] == 2
    assert "rtv_champion_version" not in after  # no model yet: no figure rather than a made-up one


def test_metrics_still_answer_when_the_cache_is_down(settings) -> None:  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": f"redis://127.0.0.1:{port}/0"}}
    resp = APIClient().get("/metrics")
    assert resp.status_code == 200 and b"python_info" in resp.content


def test_registering_the_collector_reads_nothing() -> None:
    """Every process registers it at start (web, worker, beat, each command): no query then."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from prometheus_client import CollectorRegistry

    from rtv.metrics import PlatformCollector

    with CaptureQueriesContext(connection) as ctx:
        CollectorRegistry().register(PlatformCollector())
    assert len(ctx.captured_queries) == 0
