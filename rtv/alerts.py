"""Alert delivery: the quality and model-monitoring alerts, by email and to a Slack webhook.

Alerts are rows (``quality.QualityAlert``, ``modelling.ModelAlert``), written by the jobs that find
them; this job sends the new ones every few minutes (``rtv.deliver_alerts``).  Each channel is
recorded on the alert once it took it (``delivered_to``), so a channel that was down is tried
again on the next run and one that took it is not sent it twice; ``delivered_at`` is set once every
configured channel has it.  The same model alert (metric, scope, version) delivered within the
last 20 hours is not sent again: the nightly monitoring would otherwise repeat a standing drift
each run.  Channels: ``RTV_ALERT_EMAILS`` through Django's mail settings (``EMAIL_HOST``...), and
``RTV_ALERT_SLACK_WEBHOOK_URL`` (an incoming webhook: ``{"text": ...}``).  With neither set,
alerts stay on the staff pages only."""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone

from rtv.locks import exclusive

log = logging.getLogger(__name__)

BATCH = 50  # alerts per run, oldest first: a backlog goes out over a few runs
REPEAT_WINDOW = timedelta(hours=20)  # the same model alert again within this: not sent again


def _email(subject: str, text: str) -> None:
    send_mail(subject, text, settings.DEFAULT_FROM_EMAIL, list(settings.RTV_ALERT_EMAILS), fail_silently=False)


def _slack(subject: str, text: str) -> None:
    url = settings.RTV_ALERT_SLACK_WEBHOOK_URL
    if not url.startswith(("https://", "http://")):
        raise ValueError("RTV_ALERT_SLACK_WEBHOOK_URL must be an http(s) URL")
    body = json.dumps({"text": f"*{subject}*\n{text}"}).encode()
    request = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 (http(s) only, checked above)
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=settings.RTV_ALERT_TIMEOUT_SECONDS) as response:  # noqa: S310
        if response.status >= 300:
            raise OSError(f"the webhook answered {response.status}")


def channels() -> list[tuple[str, Callable[[str, str], None]]]:
    out: list[tuple[str, Callable[[str, str], None]]] = []
    if settings.RTV_ALERT_EMAILS:
        out.append(("email", _email))
    if settings.RTV_ALERT_SLACK_WEBHOOK_URL:
        out.append(("slack", _slack))
    return out


def _link(path: str) -> str:
    base = settings.RTV_BASE_URL.rstrip("/")
    return f"{base}{path}" if base else path


def alert_text(alert: Any) -> tuple[str, str]:
    """Subject and body: what, for which model or data, when, and where to look."""
    from modelling.models import ModelAlert

    if isinstance(alert, ModelAlert):
        mv = alert.run.model_version
        model = f"{mv.name} v{mv.version}" if mv is not None else "no model"
        subject = f"RTV model alert: {alert.metric} ({alert.scope}), {model}"
        body = (f"{alert.message}\n\nModel: {model}; {alert.metric} = {alert.value:g} "
                f"(threshold {alert.threshold:g}), scope {alert.scope}; monitoring run {alert.run_id} "
                f"of {alert.run.ran_at:%Y-%m-%d %H:%M} UTC.\nMonitoring: {_link('/models/monitoring/')}")
    else:
        subject = f"RTV data quality alert: {alert.metric}, {alert.snapshot.day}"
        body = (f"{alert.message}\n\nSnapshot of {alert.snapshot.day}: {alert.snapshot.records} current records, "
                f"{alert.snapshot.errors} errors, {alert.snapshot.warnings} warnings.\n"
                f"Quality trend: {_link('/quality/')}")
    return subject, body


def _repeat(alert: Any, now: datetime) -> Any:
    """The same model alert already delivered within ``REPEAT_WINDOW``, if any."""
    from modelling.models import ModelAlert

    if not isinstance(alert, ModelAlert):
        return None
    # "Within a day" with slack: tomorrow's run of the nightly job comes a few seconds either side
    # of 24 hours after today's.
    return (ModelAlert.objects.filter(metric=alert.metric, scope=alert.scope, run__model_version=alert.run.model_version,
                                      delivered_at__gte=now - REPEAT_WINDOW)
            .exclude(pk=alert.pk).exclude(delivered_to__has_key="suppressed").first())


def alerts_deliver(*, now: datetime | None = None) -> dict[str, int]:
    """Send the alerts not yet delivered (from the last ``RTV_ALERT_MAX_AGE_DAYS``); returns counts.
    One run at a time (runs queued behind busy workers would each send the same alerts); a channel
    that fails is not tried again in the same run (a server that does not answer would otherwise
    cost its timeout per alert)."""
    counts = {"sent": 0, "repeats": 0, "failed": 0}
    if not channels():
        return counts
    with exclusive("rtv.deliver_alerts", wait=False) as mine:
        if mine:
            _deliver(now or timezone.now(), counts)
    return counts


def _deliver(now: datetime, counts: dict[str, int]) -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    from modelling.models import ModelAlert
    from quality.models import QualityAlert

    ways = channels()
    down: set[str] = set()
    since = now - timedelta(days=settings.RTV_ALERT_MAX_AGE_DAYS)
    pending = [*QualityAlert.objects.filter(delivered_at__isnull=True, created_at__gte=since)
               .select_related("snapshot").order_by("created_at")[:BATCH],
               *ModelAlert.objects.filter(delivered_at__isnull=True, created_at__gte=since)
               .select_related("run__model_version").order_by("created_at")[:BATCH]]
    pending.sort(key=lambda a: a.created_at)
    for alert in pending[:BATCH]:
        sent = dict(alert.delivered_to or {})
        earlier = _repeat(alert, now)
        if earlier is not None:
            alert.delivered_to = {"suppressed": f"a repeat of alert {earlier.pk}, delivered {earlier.delivered_at:%Y-%m-%d %H:%M}"}
            alert.delivered_at = now
            alert.save(update_fields=["delivered_to", "delivered_at"])
            counts["repeats"] += 1
            continue
        subject, body = alert_text(alert)
        for name, send in ways:
            if name in sent or name in down:
                continue
            try:
                send(subject, body)
            except SoftTimeLimitExceeded:
                raise
            except Exception as exc:  # a channel down: tried again next run, the others still go
                counts["failed"] += 1
                down.add(name)
                log.warning("alert not delivered", extra={"alert": alert.pk, "channel": name, "error": str(exc)[:300]})
                continue
            sent[name] = timezone.now().isoformat()
        alert.delivered_to = sent
        if all(name in sent for name, _ in ways):
            alert.delivered_at = now
            counts["sent"] += 1
        alert.save(update_fields=["delivered_to", "delivered_at"])
