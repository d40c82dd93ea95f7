"""Partner files dropped into storage inboxes are picked up by the scheduled job."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from ingestion.inbox import inbox_scan, storage_list
from ingestion.models import IngestionBatch, Partner, SurveyRecord
from ingestion.synthetic.generator import generate, write
from rtv.models import AuditEvent, PipelineRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def partner() -> Partner:
    return Partner.objects.create(name="Hope Uganda", slug="hope")


def drop(tmp_path: Path, name: str, rows: int = 50, seed: int = 1) -> str:
    data, errors = generate(rows, seed=seed)
    path = tmp_path / name
    write(data, errors, path, name.rsplit(".", 1)[-1])
    return default_storage.save(f"inbox/hope/{name}", ContentFile(path.read_bytes()))


def test_inbox_files_become_partner_batches_and_leave_the_inbox(partner, tmp_path,  # type: ignore[no-untyped-def]
                                                                 django_capture_on_commit_callbacks) -> None:
    drop(tmp_path, "march.csv", seed=1)
    drop(tmp_path, "april.parquet", seed=2)
    with django_capture_on_commit_callbacks(execute=True):
        assert inbox_scan() == 2
    assert storage_list(default_storage, "inbox/hope/") == []
    batches = IngestionBatch.objects.filter(partner=partner)
    assert {b.original_name for b in batches} == {"march.csv", "april.parquet"}
    assert all(b.channel == "partner" and b.status == "succeeded" and b.file_key.startswith("raw/") for b in batches)
    assert SurveyRecord.objects.count() == 100
    assert PipelineRun.objects.get(job="partner_inbox_scan").counts == {"batches": 2}


def test_a_file_seen_before_or_unreadable_is_archived_not_lost(partner, tmp_path,  # type: ignore[no-untyped-def]
                                                                django_capture_on_commit_callbacks) -> None:
    drop(tmp_path, "march.csv", seed=1)
    with django_capture_on_commit_callbacks(execute=True):
        inbox_scan()
    drop(tmp_path, "march.csv", seed=1)  # the same bytes again
    default_storage.save("inbox/hope/readme.docx", ContentFile(b"not data"))
    with django_capture_on_commit_callbacks(execute=True):
        assert inbox_scan() == 0
    assert storage_list(default_storage, "inbox/hope/") == []
    assert default_storage.exists("archive/inbox/hope/march.csv")
    assert default_storage.exists("archive/inbox/hope/readme.docx")
    assert AuditEvent.objects.filter(action="inbox.file_refused").count() == 2
    assert IngestionBatch.objects.count() == 1


def test_inactive_partners_are_not_scanned(partner, tmp_path) -> None:  # type: ignore[no-untyped-def]
    partner.active = False
    partner.save()
    drop(tmp_path, "may.csv")
    assert inbox_scan() == 0
    assert storage_list(default_storage, "inbox/hope/") == ["inbox/hope/may.csv"]


def test_admins_register_partners_and_their_accounts_in_the_admin(client, make_user) -> None:  # type: ignore[no-untyped-def]
    account = make_user("partner")
    client.force_login(make_user("admin"))
    resp = client.post("/admin/ingestion/partner/add/", {"name": "Hope Uganda", "slug": "hope", "active": "on",
                                                         "users": [account.pk], "contact_email": "data@hope.example"})
    assert resp.status_code == 302, resp.content[:1500]
    partner = Partner.objects.get(slug="hope")
    assert list(partner.users.all()) == [account] and partner.inbox_prefix == "inbox/hope/"
    client.force_login(make_user("reviewer"))
    assert client.get("/admin/ingestion/partner/add/").status_code == 403
    client.force_login(make_user("data_manager"))  # data managers keep the registry too
    assert client.get(f"/admin/ingestion/partner/{partner.pk}/change/").status_code == 200


def test_a_file_that_fails_loses_nothing_and_stops_nothing(partner, tmp_path, monkeypatch,  # type: ignore[no-untyped-def]
                                                            django_capture_on_commit_callbacks) -> None:
    """Storage refuses the second file's raw/ copy: the first file's batch stands, the second stays in
    the inbox for the next run, and the other partner's file is ingested."""
    from django.core.files.storage import FileSystemStorage

    Partner.objects.create(name="Zed", slug="zed")
    drop(tmp_path, "a.csv", seed=1)
    drop(tmp_path, "b.csv", seed=2)
    data, errors = generate(20, seed=3)
    write(data, errors, tmp_path / "z.csv", "csv")
    default_storage.save("inbox/zed/z.csv", ContentFile((tmp_path / "z.csv").read_bytes()))
    real_save = FileSystemStorage.save
    calls = {"n": 0}

    def flaky(self, name: str, content, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name.startswith("raw/"):
            calls["n"] += 1
            if calls["n"] == 2:  # the second file of the first run only
                raise OSError("disk full")
        return real_save(self, name, content, *args, **kwargs)

    monkeypatch.setattr(FileSystemStorage, "save", flaky)
    with django_capture_on_commit_callbacks(execute=True):
        assert inbox_scan() == 2
    assert sorted(IngestionBatch.objects.values_list("original_name", flat=True)) == ["a.csv", "z.csv"]
    assert storage_list(default_storage, "inbox/hope/") == ["inbox/hope/b.csv"]  # kept, not lost
    assert AuditEvent.objects.filter(action="inbox.file_failed", changes__file="inbox/hope/b.csv").exists()
    with django_capture_on_commit_callbacks(execute=True):
        assert inbox_scan() == 1  # the next run takes it
    assert storage_list(default_storage, "inbox/hope/") == []


def test_an_odd_name_is_archived_under_the_name_storage_gives_and_audited_as_such(partner, tmp_path,  # type: ignore[no-untyped-def]
                                                                                   django_capture_on_commit_callbacks) -> None:
    default_storage.save("inbox/hope/notes.docx", ContentFile(b"one"))
    with django_capture_on_commit_callbacks(execute=True):
        inbox_scan()
    default_storage.save("inbox/hope/notes.docx", ContentFile(b"two"))
    with django_capture_on_commit_callbacks(execute=True):
        inbox_scan()
    archived = [e.changes["archived_as"] for e in AuditEvent.objects.filter(action="inbox.file_refused").order_by("pk")]
    assert len(set(archived)) == 2 and all(default_storage.exists(a) for a in archived)
    with default_storage.open(archived[1], "rb") as fh:
        assert fh.read() == b"two"  # the audit points at the file it archived


def test_a_file_over_the_upload_limit_is_archived_with_the_reason(partner, tmp_path, settings,  # type: ignore[no-untyped-def]
                                                                   django_capture_on_commit_callbacks) -> None:
    """The inbox takes no bigger file than the upload door does."""
    key = drop(tmp_path, "huge.csv", rows=50)
    settings.RTV_MAX_UPLOAD_BYTES = default_storage.size(key) - 1
    with django_capture_on_commit_callbacks(execute=True):
        assert inbox_scan() == 0
    assert not IngestionBatch.objects.exists() and default_storage.exists("archive/inbox/hope/huge.csv")
    refused = AuditEvent.objects.get(action="inbox.file_refused")
    assert "limited to" in refused.changes["reason"]


def test_the_web_server_waits_for_a_large_upload_over_a_slow_link() -> None:
    """gunicorn's default (30 s) would kill a sync worker part-way through reading 200 MB."""
    import os
    import runpy
    import shutil
    from unittest import mock

    from django.conf import settings

    with mock.patch.dict(os.environ):  # the file names a metrics directory for the server: not for this process
        config = runpy.run_path(str(Path(settings.BASE_DIR) / "gunicorn.conf.py"))
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    assert config["timeout"] >= 200  # MB, at 1 MB/s
