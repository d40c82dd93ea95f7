"""PII is encrypted at rest with rotating keys; a wrong key fails loudly, never returns ciphertext."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import call_command
from django.db import connection

from ingestion.models import Household, IngestionBatch, SurveyRecord
from rtv.fields import _fernet, blind_index

pytestmark = pytest.mark.django_db


def make_record(gps: object) -> SurveyRecord:
    batch = IngestionBatch.objects.create(channel="device")
    household = Household.objects.create(household_id="KAN-KAN-FER-K1")
    return SurveyRecord.objects.create(household=household, batch=batch, content_hash="x", district="Kanungu",
                                       village="V", gps=gps)


def stored_text(record: SurveyRecord) -> str:
    with connection.cursor() as cur:
        cur.execute(f"SELECT gps FROM {SurveyRecord._meta.db_table} WHERE id = %s", [record.pk])
        return str(cur.fetchone()[0])


def test_gps_is_ciphertext_in_the_database_and_plain_in_python() -> None:
    rec = make_record({"lat": -0.9123, "lon": 29.81, "accuracy_m": 4.5})
    assert "29.81" not in stored_text(rec)
    assert SurveyRecord.objects.get(pk=rec.pk).gps == {"lat": -0.9123, "lon": 29.81, "accuracy_m": 4.5}


@pytest.mark.parametrize("value", [0, "", None, [], {"lat": 0.0}])
def test_falsy_values_round_trip_as_themselves(value: object) -> None:
    rec = make_record(value)
    assert SurveyRecord.objects.get(pk=rec.pk).gps == value


def test_a_wrong_key_raises_instead_of_returning_ciphertext(settings) -> None:  # type: ignore[no-untyped-def]
    rec = make_record({"lat": 1.0})
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    _fernet.cache_clear()
    with pytest.raises(InvalidToken):
        SurveyRecord.objects.get(pk=rec.pk)


def test_keys_rotate_old_data_stays_readable_and_the_command_re_encrypts(settings) -> None:  # type: ignore[no-untyped-def]
    rec = make_record({"lat": 2.0})
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]
    assert SurveyRecord.objects.get(pk=rec.pk).gps == {"lat": 2.0}
    call_command("rotate_encryption_keys")
    settings.FIELD_ENCRYPTION_KEYS = [new_key]
    assert SurveyRecord.objects.get(pk=rec.pk).gps == {"lat": 2.0}


def test_encrypted_fields_refuse_lookups_that_would_silently_match_nothing() -> None:
    with pytest.raises(TypeError):
        list(SurveyRecord.objects.filter(gps={"lat": 1.0}))
    assert SurveyRecord.objects.filter(gps__isnull=True).count() == 0


def test_blind_index_is_stable_keyed_and_normalised(settings) -> None:  # type: ignore[no-untyped-def]
    assert blind_index(" +256 700 000 001 ") == blind_index("+256 700 000 001")
    first = blind_index("x")
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    assert blind_index("x") != first


def test_the_command_re_encrypts_kept_device_requests_too(settings, api) -> None:  # type: ignore[no-untyped-def]
    """A device request is kept whole and encrypted: waiting in the database, then under raw/."""
    import json
    import uuid

    from ingestion.submissions import device_bodies_keep, device_body
    from ingestion.synthetic.generator import generate
    from tests.payloads import household_payload

    rows = generate(2, seed=5, bad_rate=0.0)[0]
    officer = api("field_officer")
    bodies = [json.dumps({"submission_id": str(uuid.uuid4()), "collected_at": "2026-11-20T10:15:00+03:00",
                          "location": {"lat": -0.91, "lon": 29.8}, "data": household_payload(rows, i)}).encode()
              for i in range(2)]
    for raw in bodies:
        assert officer.post("/api/v1/submissions/", raw, content_type="application/json").status_code == 201
    first, second = SurveyRecord.objects.order_by("pk")
    assert device_bodies_keep([first.pk]) == 1  # one under raw/, one still in the database
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), old_key]
    call_command("rotate_encryption_keys")
    settings.FIELD_ENCRYPTION_KEYS = settings.FIELD_ENCRYPTION_KEYS[:1]
    kept = [device_body(IngestionBatch.objects.get(pk=r.batch_id)) for r in (first, second)]
    assert kept == bodies
    from django.core.files.storage import default_storage

    assert len(default_storage.listdir(f"raw/{first.batch_id}")[1]) == 1  # the old token is gone


def _two_kept_device_requests(api) -> list[SurveyRecord]:  # type: ignore[no-untyped-def]
    import uuid

    from ingestion.submissions import device_bodies_keep
    from ingestion.synthetic.generator import generate
    from tests.payloads import household_payload

    rows = generate(2, seed=6, bad_rate=0.0)[0]
    officer = api("field_officer")
    for i in range(2):
        body = {"submission_id": str(uuid.uuid4()), "collected_at": "2026-11-20T10:15:00+03:00",
                "data": household_payload(rows, i)}
        assert officer.post("/api/v1/submissions/", body, format="json").status_code == 201
    records = list(SurveyRecord.objects.order_by("pk"))
    assert device_bodies_keep([r.pk for r in records]) == 2
    return records


def test_a_rotation_that_dies_after_its_commit_still_deletes_the_old_keys_copies(settings, api) -> None:  # type: ignore[no-untyped-def]
    """The deletes are committed with the new names, as an outbox message: a retired key leaves no copy."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from ingestion.submissions import device_bodies_rotate
    from ingestion.tasks import delete_unnamed_files_task
    from rtv.models import OutboxMessage

    records = _two_kept_device_requests(api)
    old_files = {r.batch_id: IngestionBatch.objects.get(pk=r.batch_id).file_key for r in records}
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), settings.FIELD_ENCRYPTION_KEYS[0]]
    device_bodies_rotate()
    [message] = OutboxMessage.objects.filter(task="ingestion.delete_unnamed_files")
    assert sorted(key for _, key in message.args[0]) == sorted(old_files.values())
    # As if the process had died before its own deletes: the old copies are back, and the task runs.
    for key in old_files.values():
        default_storage.save(key, ContentFile(b"an old key's token"))
    named = [str(records[0].batch_id), IngestionBatch.objects.get(pk=records[0].batch_id).file_key]
    assert delete_unnamed_files_task.apply(args=[[*message.args[0], named]]).get() == 2  # a named file is kept
    assert not any(default_storage.exists(key) for key in old_files.values()) and default_storage.exists(named[1])


def test_a_rotation_page_that_fails_leaves_no_copy_and_every_request_readable(settings, api, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from django.core.files.storage import default_storage

    from ingestion import submissions
    from ingestion.submissions import device_bodies_rotate, device_body

    records = _two_kept_device_requests(api)
    before = {r.batch_id: device_body(IngestionBatch.objects.get(pk=r.batch_id)) for r in records}
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), settings.FIELD_ENCRYPTION_KEYS[0]]
    real = submissions.fernet()
    calls = []

    class FailsOnTheSecond:
        def rotate(self, token: bytes) -> bytes:
            calls.append(token)
            if len(calls) == 2:
                raise OSError("storage went away")
            return real.rotate(token)

    with monkeypatch.context() as patched:
        patched.setattr(submissions, "fernet", FailsOnTheSecond)
        with pytest.raises(OSError):
            device_bodies_rotate()
    assert len(calls) == 2  # the first request's new copy was written, then the page failed
    for record in records:
        batch = IngestionBatch.objects.get(pk=record.batch_id)
        assert default_storage.listdir(f"raw/{batch.pk}")[1] == [batch.file_key.rsplit("/", 1)[1]]
        assert device_body(batch) == before[batch.pk]


def test_rotations_keep_names_short_and_pass_over_a_request_gone_from_storage(settings, api) -> None:  # type: ignore[no-untyped-def]
    """Each rotation saves under the request's own name (or beside it, when that is taken): names
    alternate instead of growing a suffix per rotation past the column.  A file already gone from
    storage is passed over: it cannot block the other requests' rotation, and with it a key's retirement."""
    from django.core.files.storage import default_storage

    from ingestion.submissions import _body_key, device_bodies_rotate, device_body

    kept, gone = _two_kept_device_requests(api)
    gone_batch = IngestionBatch.objects.get(pk=gone.batch_id)
    default_storage.delete(gone_batch.file_key)
    before = device_body(IngestionBatch.objects.get(pk=kept.batch_id))
    base = _body_key(kept.batch_id)
    for _ in range(4):
        settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), settings.FIELD_ENCRYPTION_KEYS[0]]
        device_bodies_rotate()
        batch = IngestionBatch.objects.get(pk=kept.batch_id)
        assert len(batch.file_key) <= len(base) + 8 and len(default_storage.listdir(f"raw/{batch.pk}")[1]) == 1
        assert device_body(batch) == before
    assert IngestionBatch.objects.get(pk=gone.batch_id).file_key == gone_batch.file_key  # named as before
