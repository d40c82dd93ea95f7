"""Device submission endpoints: parse, call the service, answer.  No rules live here."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from django.conf import settings
from django.http.request import RawPostDataException
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from ingestion.models import RowIssue, SurveyRecord
from ingestion.selectors import access_submission
from ingestion.submissions import (
    INVALID_MESSAGE,
    Envelope,
    Outcome,
    answerable,
    field_diff,
    submissions_receive,
    version_chain,
)
from modelling import serving
from modelling.models import Prediction
from rtv.errors import ApiError, JSONParser, _flatten
from rtv.roles import ADMIN, DATA_MANAGER, FIELD_OFFICER, HasRole

CAN_SUBMIT = HasRole.of(FIELD_OFFICER, DATA_MANAGER, ADMIN)
log = logging.getLogger(__name__)


class LocationIn(serializers.Serializer):
    lat = serializers.FloatField(min_value=-90, max_value=90)
    lon = serializers.FloatField(min_value=-180, max_value=180)
    accuracy_m = serializers.FloatField(min_value=0, required=False, allow_null=True)


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 date-time that must say its offset: a phone's local clock without one is ambiguous."""

    def to_internal_value(self, value: Any) -> Any:
        if isinstance(value, str) and value and not (value.endswith("Z") or "+" in value[10:] or "-" in value[10:]):
            raise serializers.ValidationError("collected_at needs a time zone offset (e.g. +03:00 or Z).",
                                              code="timezone_required")
        return super().to_internal_value(value)


class AnswersField(serializers.DictField):
    """The survey answers: a JSON object, taken as it is.  The survey's own rules judge the values
    (with field names in their errors); a DictField's per-key child validation only cost time."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            self.fail("not_a_dict", input_type=type(data).__name__)
        return data


class TextUUIDField(serializers.UUIDField):
    """A UUID written as text: DRF's own also takes a JSON number (7 would be the UUID ...0007),
    which is a device's bug to report, not an identity to invent."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class SubmissionIn(serializers.Serializer):
    submission_id = TextUUIDField(required=False)
    form_version = serializers.CharField(max_length=40, required=False, allow_blank=True, default="")
    collected_at = AwareDateTimeField(required=False, allow_null=True, default=None)
    device_id = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")
    location = LocationIn(required=False, allow_null=True, default=None)
    supersedes = TextUUIDField(required=False, allow_null=True, default=None)
    data = AnswersField()


# One bound instance, validating every envelope: ``run_validation`` keeps no state between calls (it is
# how a ListSerializer reuses its child), and building a serializer's fields costs ~1 ms per item.
SUBMISSION_IN = SubmissionIn()


def envelope_check(item: Any) -> dict[str, Any]:
    """The envelope's fields, validated; a ValidationError keyed by field otherwise."""
    try:
        return dict(SUBMISSION_IN.run_validation(item))
    except serializers.ValidationError as exc:
        detail = exc.detail if isinstance(exc.detail, dict) else {
            api_settings.NON_FIELD_ERRORS_KEY: exc.detail if isinstance(exc.detail, list) else [exc.detail]}
        raise serializers.ValidationError(detail) from exc


def _envelope(data: dict[str, Any], idempotency_key: str | None) -> Envelope:
    sid = data.get("submission_id")
    if sid is None:
        if not idempotency_key:
            raise serializers.ValidationError({"submission_id": ["submission_id or an Idempotency-Key header is required."]},
                                              code="required")
        try:
            import uuid

            sid = uuid.UUID(idempotency_key)
        except ValueError as exc:
            raise serializers.ValidationError({"submission_id": ["The Idempotency-Key must be a UUID."]}) from exc
    loc = data.get("location")
    return Envelope(submission_id=sid, data=data["data"], form_version=data.get("form_version", ""),
                    collected_at=data.get("collected_at"), device_id=data.get("device_id", ""),
                    location=dict(loc) if loc else None, supersedes=data.get("supersedes"))


def record_body(record: SurveyRecord, issues: list[RowIssue] | None = None) -> dict[str, Any]:
    """What the API says about a stored record, derived from stored state only: a replay gets the
    first receipt's body, with the record's review status as it is now (a device resending after a
    review learns the reviewer's decision)."""
    if issues is None:
        issues = getattr(record, "issue_list", None)
    if issues is None:
        issues = list(record.issues.order_by("id"))
    return {
        "id": record.pk,
        "submission_id": str(record.submission_id) if record.submission_id else None,
        "household_id": record.household.household_id,
        "version": record.version,
        "supersedes": str(record.supersedes.submission_id) if record.supersedes_id and record.supersedes else None,
        "status": record.review_status,
        "received_at": record.received_at.isoformat(),
        "label": {"progress_status": record.progress_status or None, "income_per_day": record.income_per_day,
                  "vulnerable": record.vulnerable},
        "quality": {
            "score": record.quality_score, "completeness": record.completeness, "validity": record.validity,
            "consistency": record.consistency, "auto_approved": record.auto_approved,
            "errors": 0,
            "warnings": record.warning_count,
            "issues": [{"field": i.field, "code": i.rule, "severity": i.severity, "message": i.message} for i in issues],
        },
    }


def _body(request: Request, limit: int) -> bytes:
    """The body as received (413 over ``limit``), read before DRF parses it (which then parses these
    bytes).  A form already read by the CSRF check of a signed-in browser is not JSON: 415."""
    length = int(request.META.get("CONTENT_LENGTH") or 0)
    if length > limit:
        raise ApiError("payload_too_large", f"The body is {length} bytes; the limit is {limit}.", status_code=413)
    try:
        return request._request.body
    except RawPostDataException as exc:
        raise ApiError("unsupported_media_type", "Send submissions as JSON (Content-Type: application/json).",
                       status_code=415) from exc


def provisional_predictions(outcomes: list[Outcome | None]) -> dict[int, dict[str, Any]]:
    """Each stored record's prediction: new records are scored now by the model that answers their
    household (and the prediction stored); replays get the latest stored one.  Scoring is a
    courtesy: when it fails the receipt still stands, and the after-commit job scores later."""
    stored = [o.record for o in outcomes if o is not None and o.result in ("created", "replayed") and o.record is not None]
    serving_model = serving.champion() is not None or serving.active_experiment() is not None
    # Without a model only a replay can have a prediction (from an earlier champion): ask for those.
    known = [r.pk for r in stored] if serving_model else [o.record.pk for o in outcomes if o is not None
                                                          and o.result == "replayed" and o.record is not None]
    latest = serving.latest_predictions(known)  # a replay's, or the after-commit job's
    answers = {pk: serving.prediction_body(p) for pk, p in latest.items()}
    todo = [r.pk for r in stored if r.pk not in latest]
    if todo and serving_model:
        try:
            frame = serving.records_frame(SurveyRecord.objects.filter(pk__in=todo).order_by("pk"),
                                          few=len(todo) <= serving.SMALL_BATCH)
            for answer in serving.predictions_make(frame, household_ids=frame["_household_id"].tolist(),
                                                   record_ids=frame["_record"].tolist(),
                                                   source=Prediction.Source.SUBMISSION):
                answers[answer["record_id"]] = answer
        except serving.NoChampion:
            pass
        except Exception:  # the record is safe; only the courtesy score failed
            log.exception("provisional prediction failed", extra={"records": todo})
    return answers


def _answer(outcome: Outcome) -> Response:
    if outcome.result in ("created", "replayed"):
        assert outcome.record is not None
        body = record_body(outcome.record)
        body["prediction"] = provisional_predictions([outcome]).get(outcome.record.pk)
        return Response(body, status=outcome.http_status)
    refusal: dict[str, Any] = {"code": outcome.code, "message": outcome.message, "errors": outcome.errors}
    if outcome.record is not None:
        refusal["record"] = {"id": outcome.record.pk, "submission_id": str(outcome.record.submission_id)}
    return Response(refusal, status=outcome.http_status)


class SubmissionCreateView(APIView):
    permission_classes = [CAN_SUBMIT]
    parser_classes = [JSONParser]  # devices send JSON; a form is answered 415

    @extend_schema(request=SubmissionIn, responses={201: dict, 200: dict, 400: dict, 409: dict, 413: dict})
    def post(self, request: Request) -> Response:
        body = _body(request, settings.RTV_MAX_SUBMISSION_BYTES)
        envelope = _envelope(envelope_check(request.data), request.headers.get("Idempotency-Key"))
        [outcome] = submissions_receive(user=request.user, envelopes=[envelope],
                                        user_agent=request.headers.get("User-Agent", ""), body=body)
        assert outcome is not None
        return _answer(outcome)


@extend_schema_field(SubmissionIn)  # documented as what each item should be
class _Item(serializers.Field):
    """Any JSON value: each item is validated on its own, so one bad item never rejects the rest."""

    def to_internal_value(self, data: Any) -> Any:
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class BatchIn(serializers.Serializer):
    items = serializers.ListField(child=_Item(allow_null=True), max_length=500, allow_empty=False)  # a null item is judged alone


class SubmissionBatchView(APIView):
    """Up to 500 records from a device back online; per-item results in order."""

    permission_classes = [CAN_SUBMIT]
    parser_classes = [JSONParser]

    @extend_schema(request=BatchIn, responses={200: dict},
                   description="Each item is judged on its own: one that is not a valid submission (even one that "
                               "does not match SubmissionIn, or null) is answered as `invalid` with its errors, in "
                               "its place among the results of a 200; the others are stored.")
    def post(self, request: Request) -> Response:
        body = _body(request, settings.RTV_MAX_BATCH_BYTES)
        batch = BatchIn(data=request.data)
        batch.is_valid(raise_exception=True)
        results: list[dict[str, Any] | None] = [None] * len(batch.validated_data["items"])
        envelopes: list[Envelope] = []
        for i, item in enumerate(batch.validated_data["items"]):
            try:
                envelopes.append(dataclasses.replace(_envelope(envelope_check(item), None), position=i))
            except serializers.ValidationError as exc:
                sid = item.get("submission_id") if isinstance(item, dict) else None
                results[i] = {"index": i, "result": "invalid", "status": 400,
                              # echoed only as text that can be answered (not 1e400, not a lone surrogate)
                              "submission_id": sid if isinstance(sid, str) and answerable(sid) else None,
                              "code": "invalid_submission", "message": INVALID_MESSAGE, "errors": _flatten(exc.detail)}
        outcomes = submissions_receive(user=request.user, envelopes=envelopes,
                                       user_agent=request.headers.get("User-Agent", ""), body=body)
        predictions = provisional_predictions(outcomes)
        for env, outcome in zip(envelopes, outcomes, strict=True):
            assert outcome is not None
            entry: dict[str, Any] = {"index": env.position, "result": outcome.result, "status": outcome.http_status,
                                     "submission_id": str(env.submission_id)}
            if outcome.record is not None and outcome.result in ("created", "replayed"):
                entry["record"] = record_body(outcome.record)
                entry["record"]["prediction"] = predictions.get(outcome.record.pk)
            else:
                entry.update(code=outcome.code, message=outcome.message, errors=outcome.errors)
                if outcome.record is not None:  # a conflict names the stored record, as the single endpoint does
                    entry["record"] = {"id": outcome.record.pk, "submission_id": str(outcome.record.submission_id)}
            results[env.position] = entry
        counts: dict[str, int] = {}
        for r in results:
            assert r is not None
            counts[r["result"]] = counts.get(r["result"], 0) + 1
        return Response({"results": results, "counts": counts}, status=200)


class SubmissionDetailView(APIView):
    @extend_schema(responses={200: dict, 404: dict})
    def get(self, request: Request, submission_id: str) -> Response:
        record = access_submission(request.user, submission_id)
        chain = version_chain(record)
        latest = serving.latest_predictions([record.pk]).get(record.pk)
        body = record_body(record)
        body["versions"] = [{"version": r.version, "submission_id": str(r.submission_id) if r.submission_id else None,
                             "received_at": r.received_at.isoformat()} for r in chain]
        body["latest_version"] = chain[-1].version
        body["prediction"] = None if latest is None else serving.prediction_body(latest)
        return Response(body)


class SubmissionVersionsView(APIView):
    @extend_schema(responses={200: dict, 404: dict})
    def get(self, request: Request, submission_id: str) -> Response:
        record = access_submission(request.user, submission_id)
        chain = version_chain(record)
        versions = []
        for prev, cur in zip([None, *chain[:-1]], chain, strict=True):
            versions.append({
                "version": cur.version,
                "submission_id": str(cur.submission_id) if cur.submission_id else None,
                "received_at": cur.received_at.isoformat(),
                "changes": [] if prev is None else field_diff(prev.data, cur.data),
            })
        return Response({"submission_id": str(record.submission_id), "versions": versions})
