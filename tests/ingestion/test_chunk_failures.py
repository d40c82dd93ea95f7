"""A chunk that cannot be stored is tried again a bounded number of times, then marked failed: its
batch ends failed, naming the rows and the error, and keeps what the other chunks stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from ingestion.models import IngestionBatch, IngestionChunk, SurveyRecord
from ingestion.readers import ReadError
from ingestion.services import DuplicateFile, batch_create, batch_plan, chunk_process, chunks_resume_stale, ingest_file
from ingestion.synthetic.generator import generate, write

pytestmark = pytest.mark.django_db


@pytest.fixture
def survey(tmp_path: Path, settings) -> tuple[Path, str]:  # type: ignore[no-untyped-def]
    settings.RTV_CHUNK_ROWS = 25  # 100 rows -> 4 chunks; the poisoned row is in the third (rows 52-76)
    data, _ = generate(100, seed=8, bad_rate=0.0)
    data.loc[60, "village"] = "POISONED"
    return write(data, data.iloc[0:0], tmp_path / "s.csv", "csv"), "POISONED"


@pytest.fixture
def poison() -> Iterator[None]:
    """A real database failure, every time: PostgreSQL refuses one village's records."""
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL trigger makes the failure")
    with connection.cursor() as cur:
        cur.execute("CREATE FUNCTION refuse_poisoned() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.village = 'POISONED' THEN RAISE EXCEPTION 'poisoned village'; END IF; RETURN NEW; END "
                    "$$ LANGUAGE plpgsql")
        cur.execute("CREATE TRIGGER refuse_poisoned BEFORE INSERT ON ingestion_surveyrecord "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_poisoned()")
    yield


def test_a_chunk_that_always_fails_ends_its_batch_failed_naming_its_rows(survey, poison, settings) -> None:  # type: ignore[no-untyped-def]
    settings.RTV_CHUNK_MAX_ATTEMPTS = 3
    path, _ = survey
    batch = ingest_file(path)
    assert batch.status == IngestionBatch.Status.FAILED
    assert batch.error.startswith("chunk_failed: rows 52-76 were not stored after 3 attempts")
    assert "poisoned village" in batch.error
    chunks = {c.index: c for c in IngestionChunk.objects.filter(batch=batch)}
    assert [chunks[i].status for i in range(4)] == ["done", "done", "failed", "done"]
    assert chunks[2].attempts == 3 and "poisoned village" in chunks[2].error
    # Nothing valid is lost: the other chunks' rows are stored and counted.
    assert SurveyRecord.objects.filter(batch=batch).count() == batch.accepted == 75
    assert batch.finished_at is not None


def test_a_failed_batch_that_stored_records_refuses_the_same_file_unless_forced(survey, poison, settings) -> None:  # type: ignore[no-untyped-def]
    """Its stored chunks would be stored twice: the same bytes are a duplicate of it, as of a batch
    that succeeded (forcing still sends them again)."""
    settings.RTV_CHUNK_MAX_ATTEMPTS = 1
    path, _ = survey
    failed = ingest_file(path)
    assert failed.status == IngestionBatch.Status.FAILED and SurveyRecord.objects.count() == 75
    with pytest.raises(DuplicateFile) as refused:
        ingest_file(path)
    assert refused.value.earlier == failed
    assert SurveyRecord.objects.count() == 75
    forced = ingest_file(path, force=True)
    assert forced.duplicate_of == failed and forced.forced


def test_a_failed_batch_that_stored_nothing_does_not_block_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes(b"foo,bar\n1,2\n")  # no column of the survey: the plan refuses it
    with pytest.raises(ReadError):
        ingest_file(path)
    first = IngestionBatch.objects.get()
    assert first.status == IngestionBatch.Status.FAILED and not SurveyRecord.objects.exists()
    with pytest.raises(ReadError):  # read (and refused) again, not refused as a duplicate
        ingest_file(path)
    assert IngestionBatch.objects.count() == 2


def test_a_failed_attempt_hands_the_chunk_back_until_the_last(survey, poison, settings) -> None:  # type: ignore[no-untyped-def]
    settings.RTV_CHUNK_MAX_ATTEMPTS = 2
    path, _ = survey
    with path.open("rb") as fh:
        batch = batch_create(fh=fh, original_name=path.name)
    third = batch_plan(batch.pk, enqueue=False)[2]
    with pytest.raises(Exception, match="poisoned village"):
        chunk_process(third)
    chunk = IngestionChunk.objects.get(pk=third)
    assert (chunk.status, chunk.attempts, chunk.lease_until) == ("pending", 1, None)
    assert SurveyRecord.objects.filter(batch=batch).count() == 0  # the attempt left nothing behind
    with pytest.raises(Exception, match="poisoned village"):
        chunk_process(third)
    chunk.refresh_from_db()
    assert (chunk.status, chunk.attempts) == ("failed", 2)
    assert not chunk_process(third)  # a failed chunk is not taken again...
    IngestionBatch.objects.filter(pk=batch.pk).update(created_at=batch.created_at.replace(year=2020))
    assert third not in _resumed()  # ...nor handed out by the sweep
    batch.refresh_from_db()
    assert batch.status == IngestionBatch.Status.RUNNING  # the other chunks have not run yet


def _resumed() -> list[int]:
    from rtv.models import OutboxMessage

    chunks_resume_stale()
    return [m.args[0] for m in OutboxMessage.objects.filter(task="ingestion.process_chunk")]


def test_a_chunk_whose_workers_keep_dying_fails_after_its_attempts(survey, settings) -> None:  # type: ignore[no-untyped-def]
    """A worker killed mid-chunk (out of memory, a hard time limit) never records its failure: the
    lease runs out and the chunk is handed out again, but not for ever."""
    from datetime import timedelta

    from django.utils import timezone

    path, _ = survey
    with path.open("rb") as fh:
        batch = batch_create(fh=fh, original_name=path.name)
    ids = batch_plan(batch.pk, enqueue=False)
    for other in ids[1:]:
        chunk_process(other)
    for attempt in range(settings.RTV_CHUNK_MAX_ATTEMPTS):  # each attempt's worker dies holding the chunk
        IngestionChunk.objects.filter(pk=ids[0]).update(status="running", attempts=attempt + 1,
                                                        lease_until=timezone.now() - timedelta(seconds=1))
    assert not chunk_process(ids[0])
    chunk = IngestionChunk.objects.get(pk=ids[0])
    assert chunk.status == "failed" and "stopped during each of its 3 attempts" in chunk.error
    batch.refresh_from_db()
    assert batch.status == IngestionBatch.Status.FAILED and "rows 2-26" in batch.error
    assert SurveyRecord.objects.filter(batch=batch).count() == 75  # what the other chunks stored is kept


def test_a_waiting_chunk_is_handed_out_again_once_per_interval_not_on_every_sweep(survey) -> None:  # type: ignore[no-untyped-def]
    """Busy workers, a backlog: a sweep every two minutes must not add a message per waiting chunk each time."""
    path, _ = survey
    with path.open("rb") as fh:
        batch = batch_create(fh=fh, original_name=path.name)
    ids = batch_plan(batch.pk, enqueue=False)
    IngestionBatch.objects.filter(pk=batch.pk).update(created_at=batch.created_at.replace(year=2020))
    assert sorted(_resumed()) == sorted(ids)
    for _ in range(4):
        chunks_resume_stale()
    assert sorted(_resumed()) == sorted(ids)  # no more messages than chunks
    assert IngestionChunk.objects.filter(batch=batch, status="pending").count() == len(ids)
    assert chunk_process(ids[0])  # a message sent earlier is still taken as it arrives
