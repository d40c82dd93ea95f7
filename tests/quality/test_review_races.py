"""Reviewers, devices and corrections at the same moment on PostgreSQL: a decision never lands on
a version a correction has just superseded, and a device's correction and a reviewer's correction
of one record never deadlock: one wins, the other is refused."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction

from ingestion.models import SurveyRecord
from quality.services import ReviewError, record_correct, review_decide
from tests.ingestion.test_submissions import body

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def in_thread(fn: Callable[[], Any], out: list[Any]) -> threading.Thread:
    def run() -> None:
        try:
            out.append(fn())
        except Exception as exc:  # the test looks at it
            out.append(exc)
        finally:
            connection.close()

    t = threading.Thread(target=run)
    t.start()
    return t


@pytest.fixture
def postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks and their waits are PostgreSQL's")


def test_a_rejection_waiting_on_a_correction_does_not_land_on_the_version_it_superseded(  # type: ignore[no-untyped-def]
        postgres, api, make_user) -> None:
    officer = api("field_officer")
    first = body(1)
    assert officer.post("/api/v1/submissions/", first, format="json").status_code == 201
    v1 = SurveyRecord.objects.get(submission_id=first["submission_id"])
    corrected, release, out = threading.Event(), threading.Event(), []

    def correct() -> int:
        with transaction.atomic():  # the correction is made, not yet committed
            new = record_correct(record=v1, changes={"household_size": int(v1.data["household_size"]) + 1},
                                 reviewer=make_user("reviewer"))
            corrected.set()
            release.wait(10)
        return new.version

    a = in_thread(correct, out)
    corrected.wait(10)
    b = in_thread(lambda: review_decide(records=[v1], to_status="rejected", reviewer=make_user("reviewer")), out)
    time.sleep(0.5)  # the rejection is waiting for the correction's lock
    release.set()
    a.join()
    b.join()
    assert sorted(out, key=str) == [0, 2]  # the rejection moved nothing: v1 is superseded
    assert SurveyRecord.objects.get(pk=v1.pk).review_status != "rejected"


def test_a_device_correction_and_a_reviewer_correction_of_one_record_never_deadlock(  # type: ignore[no-untyped-def]
        postgres, api, make_user) -> None:
    """The device's correction is inserted and held open (a trigger sleeps after its insert) while
    the reviewer corrects the same version: one of them wins, the other is told so; no 500."""
    officer = api("field_officer")
    first = body(2)
    assert officer.post("/api/v1/submissions/", first, format="json").status_code == 201
    v1 = SurveyRecord.objects.get(submission_id=first["submission_id"])
    with connection.cursor() as cur:
        cur.execute("""CREATE FUNCTION test_hold_correction() RETURNS trigger AS $$
                       BEGIN PERFORM pg_sleep(1.0); RETURN NEW; END $$ LANGUAGE plpgsql""")
        cur.execute(f"""CREATE TRIGGER test_hold_correction AFTER INSERT ON ingestion_surveyrecord FOR EACH ROW
                        WHEN (NEW.supersedes_id = {v1.pk} AND NEW.submission_id IS NOT NULL
                              AND NEW.device_id = 'tab-07') EXECUTE FUNCTION test_hold_correction()""")
    try:
        fix = body(2, supersedes=first["submission_id"])
        fix["data"] = {**fix["data"], "household_size": int(fix["data"]["household_size"]) + 1}
        out: list[Any] = []
        device = in_thread(lambda: officer.post("/api/v1/submissions/", fix, format="json").status_code, out)
        time.sleep(0.4)  # the device's row is in, its transaction open
        reviewer: list[Any] = []
        review = in_thread(lambda: record_correct(record=v1, changes={"household_size": 1},
                                                  reviewer=make_user("reviewer")).version, reviewer)
        device.join()
        review.join()
    finally:
        with connection.cursor() as cur:
            cur.execute("DROP TRIGGER test_hold_correction ON ingestion_surveyrecord")
            cur.execute("DROP FUNCTION test_hold_correction()")
    assert out == [201] and isinstance(reviewer[0], ReviewError), (out, reviewer)
    assert SurveyRecord.objects.filter(supersedes=v1).count() == 1
