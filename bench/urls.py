"""The platform's URLs plus the bare baselines the API benchmarks measure against."""

from __future__ import annotations

import json
import uuid
from functools import lru_cache

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from ingestion.models import SURVEY_VALUE_FIELDS, Household, IngestionBatch, SurveyRecord, SurveyValues
from rtv.urls import handler400, handler404  # noqa: F401  (the root URLconf names the error views)
from rtv.urls import urlpatterns as platform


@lru_cache(maxsize=1)
def _parents() -> tuple[int, str]:
    household, _ = Household.objects.get_or_create(household_id="BENCH-BARE-0001")
    batch = IngestionBatch.objects.filter(source="bench-bare").first() or IngestionBatch.objects.create(
        channel="device", source="bench-bare")
    return household.pk, str(batch.pk)


def _row(item: dict) -> SurveyRecord:  # type: ignore[type-arg]
    household_id, batch_id = _parents()
    data = item.get("data", {})
    return SurveyRecord(household_id=household_id, batch_id=batch_id, submission_id=item.get("submission_id") or uuid.uuid4(),
                        content_hash="", district=data.get("district") or "", village=data.get("village") or "",
                        household_size=data.get("household_size"), raw=data)


def _values(record: SurveyRecord, item: dict) -> SurveyValues:  # type: ignore[type-arg]
    data = item.get("data", {})
    return SurveyValues(record=record, **{k: data.get(k) for k in SURVEY_VALUE_FIELDS})


@csrf_exempt
def bare_insert(request: HttpRequest) -> JsonResponse:
    """A bare Django view inserting the same rows (record + values): no DRF, auth or validation."""
    item = json.loads(request.body)
    with transaction.atomic():
        record = _row(item)
        record.save(force_insert=True)
        _values(record, item).save(force_insert=True)
    return JsonResponse({"id": record.pk}, status=201)


@csrf_exempt
def bare_bulk(request: HttpRequest) -> JsonResponse:
    """A bare bulk-insert view: one bulk_create per table for the whole batch."""
    items = json.loads(request.body)["items"]
    with transaction.atomic():
        rows = SurveyRecord.objects.bulk_create([_row(item) for item in items])
        SurveyValues.objects.bulk_create([_values(r, item) for r, item in zip(rows, items, strict=True)])
    return JsonResponse({"created": len(rows)}, status=201)


urlpatterns = [
    path("bench/bare-insert/", bare_insert),
    path("bench/bare-bulk/", bare_bulk),
    *platform,
]
