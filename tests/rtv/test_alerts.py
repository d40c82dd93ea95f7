"""Alerts reach people: by email through a real SMTP server and to a Slack webhook over HTTP (both
on loopback here).  A channel that is down is tried again on the next run, one that took an alert
is not sent it twice, and a standing model alert is sent once a day, not on every run."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.utils import timezone

from modelling.models import ModelAlert, ModelVersion, MonitoringRun
from quality.models import QualityAlert, QualitySnapshot
from rtv.alerts import alerts_deliver

pytestmark = pytest.mark.django_db


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp(settings) -> Iterator[Mailbox]:  # type: ignore[no-untyped-def]
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    settings.RTV_ALERT_EMAILS = ["field-ops@example.org", "data@example.org"]
    yield box
    controller.stop()


class Webhook:
    """A Slack incoming webhook: records what it is posted; answers ``status``."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.status = 200
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hook.status == 200:
                    hook.posts.append(json.loads(body))
                self.send_response(hook.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/XXX"


@pytest.fixture
def slack(settings) -> Iterator[Webhook]:  # type: ignore[no-untyped-def]
    hook = Webhook()
    settings.RTV_ALERT_SLACK_WEBHOOK_URL = hook.url
    yield hook
    hook.server.shutdown()


def model_alert(version: int = 3, metric: str = "feature_drift", ago: timedelta = timedelta(0)) -> ModelAlert:
    mv, _ = ModelVersion.objects.get_or_create(name="rtv-vulnerability", version=version, defaults={
        "mlflow_run_id": "r", "model_uri": f"models:/rtv-vulnerability/{version}", "algorithm": "lightgbm"})
    run = MonitoringRun.objects.create(model_version=mv, rows=400)
    alert = ModelAlert.objects.create(run=run, metric=metric, scope="district:Kanungu", value=0.41, threshold=0.25,
                                      message="Input drift in Kanungu: 3 features with PSI >= 0.25")
    ModelAlert.objects.filter(pk=alert.pk).update(created_at=timezone.now() - ago)
    return alert


def quality_alert() -> QualityAlert:
    snap = QualitySnapshot.objects.create(day=date(2026, 11, 26), records=1200, errors=40, warnings=300, mean_score=0.81)
    return QualityAlert.objects.create(snapshot=snap, metric="mean_score", previous=0.9, current=0.81, threshold=0.05,
                                       message="Mean quality score fell from 0.900 to 0.810, more than 0.05.")


def test_each_new_alert_goes_by_email_and_to_slack_saying_what_which_model_and_where(smtp, slack, settings) -> None:  # type: ignore[no-untyped-def]
    settings.RTV_BASE_URL = "https://rtv.example.org"
    model_alert()
    quality_alert()
    assert alerts_deliver() == {"sent": 2, "repeats": 0, "failed": 0}
    assert len(smtp.messages) == 2 and set(smtp.messages[0].rcpt_tos) == {"field-ops@example.org", "data@example.org"}
    mails = [m.content.decode() for m in smtp.messages]
    assert any("rtv-vulnerability v3" in m and "https://rtv.example.org/models/monitoring/" in m for m in mails)
    assert any("data quality" in m and "https://rtv.example.org/quality/" in m for m in mails)
    assert len(slack.posts) == 2 and "Kanungu" in slack.posts[0]["text"] + slack.posts[1]["text"]
    assert not ModelAlert.objects.filter(delivered_at__isnull=True).exists()
    assert alerts_deliver() == {"sent": 0, "repeats": 0, "failed": 0}  # nothing twice
    assert len(smtp.messages) == 2 and len(slack.posts) == 2


def test_a_channel_that_is_down_is_tried_again_and_the_other_is_not_sent_twice(smtp, slack) -> None:  # type: ignore[no-untyped-def]
    alert = model_alert()
    slack.status = 500
    assert alerts_deliver()["failed"] == 1
    alert.refresh_from_db()
    assert alert.delivered_at is None and set(alert.delivered_to) == {"email"}
    slack.status = 200
    assert alerts_deliver()["sent"] == 1
    alert.refresh_from_db()
    assert alert.delivered_at is not None and set(alert.delivered_to) == {"email", "slack"}
    assert len(smtp.messages) == 1 and len(slack.posts) == 1


def test_a_standing_model_alert_is_sent_once_a_day_not_on_every_run(smtp) -> None:  # type: ignore[no-untyped-def]
    model_alert()
    alerts_deliver()
    again = model_alert()  # the next monitoring run finds the same drift
    other = model_alert(version=4)  # a new champion's: news
    counts = alerts_deliver()
    assert counts == {"sent": 1, "repeats": 1, "failed": 0}
    again.refresh_from_db()
    assert "suppressed" in again.delivered_to and again.delivered_at is not None
    assert len(smtp.messages) == 2 and "v4" in smtp.messages[1].content.decode()
    other.refresh_from_db()
    assert other.delivered_at is not None


def test_without_channels_alerts_wait_on_the_staff_pages(settings) -> None:  # type: ignore[no-untyped-def]
    settings.RTV_ALERT_EMAILS, settings.RTV_ALERT_SLACK_WEBHOOK_URL = [], ""
    alert = model_alert()
    assert alerts_deliver() == {"sent": 0, "repeats": 0, "failed": 0}
    alert.refresh_from_db()
    assert alert.delivered_at is None and alert.delivered_to == {}


def test_an_smtp_server_that_is_down_fails_the_channel_not_the_job(settings, slack) -> None:  # type: ignore[no-untyped-def]
    port = free_port()  # nobody listens on it
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.RTV_ALERT_EMAILS = "127.0.0.1", port, ["ops@example.org"]
    alert = model_alert()
    assert alerts_deliver() == {"sent": 0, "repeats": 0, "failed": 1}
    alert.refresh_from_db()
    assert set(alert.delivered_to) == {"slack"} and len(slack.posts) == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)  # the roles and content types come back after
def test_runs_queued_behind_busy_workers_do_not_send_the_same_alerts_twice(smtp) -> None:  # type: ignore[no-untyped-def]
    from tests.locks import held_elsewhere

    model_alert()
    with held_elsewhere("rtv.deliver_alerts"):  # another delivery run, still sending
        assert alerts_deliver() == {"sent": 0, "repeats": 0, "failed": 0} and not smtp.messages
    assert alerts_deliver()["sent"] == 1 and len(smtp.messages) == 1


def test_a_channel_that_fails_is_not_tried_again_for_each_alert_of_the_run(smtp, slack) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        model_alert(metric=f"m{_}")
    slack.status = 500
    assert alerts_deliver() == {"sent": 0, "repeats": 0, "failed": 1}  # one try at Slack, not three
    assert len(smtp.messages) == 3
