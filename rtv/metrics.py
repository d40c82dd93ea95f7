"""The platform's own figures on ``/metrics``, beside django-prometheus's request metrics.

They are read from the database when Prometheus scrapes, not counted in each process: the web
workers and the Celery workers each hold their own counters, so a counter kept in one process would
read differently from each worker (and go backwards between scrapes).  The database is the one
place every process writes to.  One scrape in ``RTV_METRICS_CACHE_SECONDS`` (default 60) runs the
queries; the others, from any web worker, read the result from the cache."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CACHE_KEY = "rtv:metrics"
log = logging.getLogger(__name__)


def figures() -> dict[str, Any]:
    """Everything the collector reports, in a few aggregate queries."""
    from django.db.models import Count, Sum

    from ingestion.models import IngestionBatch, IngestionChunk, SurveyRecord
    from modelling import registry
    from modelling.models import ModelAlert, ModelVersion, MonitoringRun, Prediction
    from quality.models import QualityAlert, QualitySnapshot
    from rtv.models import OutboxMessage, PipelineRun

    rows = (IngestionBatch.objects.filter(dry_run=False).values("channel")
            .annotate(accepted=Sum("accepted"), rejected=Sum("rejected"), warnings=Sum("warnings")))
    champion = None
    if ModelVersion.objects.filter(name=settings.RTV_MODEL_NAME).exists():
        champion = next((mv.version for mv in ModelVersion.objects.filter(name=settings.RTV_MODEL_NAME)
                         if registry.CHAMPION in (mv.aliases or [])), None)
    recent = timezone.now() - timedelta(days=settings.RTV_ALERT_MAX_AGE_DAYS)  # what delivery still sends
    latest_run = MonitoringRun.objects.order_by("-ran_at").first()
    latest_snap = QualitySnapshot.objects.order_by("-day").first()
    return {
        "ingested_rows": [(r["channel"], outcome, int(r[outcome] or 0)) for r in rows
                          for outcome in ("accepted", "rejected", "warnings")],
        "records": [(r["review_status"], r["n"]) for r in SurveyRecord.objects.filter(superseded_by__isnull=True)
                    .values("review_status").annotate(n=Count("id"))],
        "batches": [(r["status"], r["n"]) for r in IngestionBatch.objects.values("status").annotate(n=Count("id"))],
        "chunks_waiting": IngestionChunk.objects.filter(status__in=["pending", "running"]).count(),
        "outbox_unsent": OutboxMessage.objects.filter(sent_at__isnull=True).count(),
        "predictions": [(r["variant"], r["source"], r["n"]) for r in Prediction.objects.values("variant", "source")
                        .annotate(n=Count("id"))],
        "champion_version": champion,
        "monitoring": None if latest_run is None else {
            "feature_psi_max": latest_run.feature_psi_max, "prediction_psi": latest_run.prediction_psi,
            "roc_auc": latest_run.roc_auc, "drift": 1.0 if latest_run.drift else 0.0,
            "ran_at": latest_run.ran_at.timestamp()},
        "quality_mean_score": None if latest_snap is None else latest_snap.mean_score,
        "alerts_undelivered": (ModelAlert.objects.filter(delivered_at__isnull=True, created_at__gte=recent).count()
                               + QualityAlert.objects.filter(delivered_at__isnull=True, created_at__gte=recent).count()),
        "runs_failed": [(r["job"], r["n"]) for r in PipelineRun.objects.filter(status="failed").values("job")
                        .annotate(n=Count("id"))],
    }


class PlatformCollector(Collector):
    def describe(self) -> list[Metric]:
        """Nothing to declare up front: without this, registering would collect (every query) in
        every process that starts, web, worker, beat or command."""
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            data = cache.get(CACHE_KEY)
            if data is None:
                data = figures()
                cache.set(CACHE_KEY, data, settings.RTV_METRICS_CACHE_SECONDS)
        except Exception:  # no database (yet), the cache down: the request metrics still go out
            log.warning("platform metrics not collected", exc_info=True)
            return
        g = GaugeMetricFamily("rtv_ingested_rows", "Rows ingested, by door and outcome (all batches but dry runs)",
                              labels=["channel", "outcome"])
        for channel, outcome, n in data["ingested_rows"]:
            g.add_metric([channel, outcome], n)
        yield g
        g = GaugeMetricFamily("rtv_records", "Current survey records, by review status", labels=["review_status"])
        for status, n in data["records"]:
            g.add_metric([status], n)
        yield g
        g = GaugeMetricFamily("rtv_ingestion_batches", "Ingestion batches, by state", labels=["status"])
        for status, n in data["batches"]:
            g.add_metric([status], n)
        yield g
        yield GaugeMetricFamily("rtv_chunks_waiting", "File chunks pending or being processed", value=data["chunks_waiting"])
        yield GaugeMetricFamily("rtv_outbox_unsent", "Tasks recorded but not yet handed to the broker",
                                value=data["outbox_unsent"])
        g = GaugeMetricFamily("rtv_predictions", "Stored predictions, by variant and source", labels=["variant", "source"])
        for variant, source, n in data["predictions"]:
            g.add_metric([variant, source], n)
        yield g
        if data["champion_version"] is not None:
            yield GaugeMetricFamily("rtv_champion_version", "The model version answering as champion",
                                    value=data["champion_version"])
        monitoring = data["monitoring"]
        if monitoring is not None:
            for key, help_text in (("feature_psi_max", "Largest input PSI in the latest monitoring run"),
                                   ("prediction_psi", "Predicted-status mix PSI in the latest monitoring run"),
                                   ("roc_auc", "ROC-AUC on newly labelled records in the latest monitoring run"),
                                   ("drift", "1 when the latest monitoring run found drift"),
                                   ("ran_at", "When the latest monitoring run ran (Unix time)")):
                if monitoring[key] is not None:
                    yield GaugeMetricFamily(f"rtv_monitoring_{key}", help_text, value=monitoring[key])
        if data["quality_mean_score"] is not None:
            yield GaugeMetricFamily("rtv_quality_mean_score", "Mean quality score in the latest daily snapshot",
                                    value=data["quality_mean_score"])
        yield GaugeMetricFamily("rtv_alerts_undelivered", "Recent alerts not yet delivered to every channel",
                                value=data["alerts_undelivered"])
        g = GaugeMetricFamily("rtv_pipeline_runs_failed", "Failed job runs, by job", labels=["job"])
        for job, n in data["runs_failed"]:
            g.add_metric([job], n)
        yield g


_registered = False


def register() -> None:
    """Once per process (AppConfig.ready)."""
    global _registered
    if _registered:
        return
    from prometheus_client import REGISTRY

    REGISTRY.register(PlatformCollector())
    _registered = True


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``/metrics``: the request metrics and the platform's figures.

    Under gunicorn (``gunicorn.conf.py`` names ``PROMETHEUS_MULTIPROC_DIR``) every web worker writes
    its request metrics to that directory and this adds up all of them, whichever worker answers.
    django-prometheus's own view does the same but leaves out collectors registered in the process,
    so the platform's figures are added here."""
    import prometheus_client
    from prometheus_client import multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(PlatformCollector())
    else:
        registry = prometheus_client.REGISTRY
    return HttpResponse(prometheus_client.generate_latest(registry), content_type=prometheus_client.CONTENT_TYPE_LATEST)
