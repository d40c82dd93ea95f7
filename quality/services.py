"""Review decisions, comments and corrections: one write path each, audited."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from ingestion.models import STORED_TEXT_LIMITS, SURVEY_VALUE_FIELDS, Household, RowIssue, SurveyRecord, SurveyValues
from rtv.selectors import current_schema
from rtv.services import audit_record, audit_record_many

from .duplicates import record_answers_hashes, stored_value
from .engine import validate_frame
from .models import ReviewComment, ReviewDecision

Status = SurveyRecord.ReviewStatus
TRANSITIONS: dict[str, set[str]] = {
    Status.RECEIVED: {Status.HAS_ISSUES, Status.ON_HOLD, Status.APPROVED, Status.REJECTED},
    Status.HAS_ISSUES: {Status.ON_HOLD, Status.APPROVED, Status.REJECTED},
    Status.ON_HOLD: {Status.HAS_ISSUES, Status.APPROVED, Status.REJECTED},
    Status.APPROVED: {Status.ON_HOLD, Status.REJECTED, Status.HAS_ISSUES},
    Status.REJECTED: {Status.ON_HOLD, Status.APPROVED, Status.HAS_ISSUES},
}


class ReviewError(ValueError):
    pass


def review_decide(*, records: Iterable[SurveyRecord], to_status: str, reviewer: AbstractBaseUser | AnonymousUser,
                  comment: str = "") -> int:
    """Move records to a review state (bulk): a decision row and an audit event each, one transaction.
    Records already in that state, or superseded by a correction, are left alone."""
    if to_status not in TRANSITIONS:
        raise ReviewError(f"unknown review state {to_status!r}")
    user = reviewer if reviewer.is_authenticated else None
    changed = 0
    with transaction.atomic():
        ids = [r.pk for r in records]
        superseded = SurveyRecord.objects.filter(supersedes=OuterRef("pk"))
        locked = list(SurveyRecord.objects.select_for_update().filter(pk__in=ids).exclude(Exists(superseded))
                      .exclude(review_status=to_status).only("id", "review_status").order_by("pk"))  # one lock order
        # A correction committed while this waited for the lock: the locking statement judged
        # "superseded" before the wait, so ask again now (a new statement sees it).
        corrected = set(SurveyRecord.objects.filter(supersedes_id__in=[r.pk for r in locked])
                        .values_list("supersedes_id", flat=True)) if locked else set()
        moving = [r for r in locked if r.pk not in corrected and to_status in TRANSITIONS[r.review_status]]
        if not moving:
            return 0
        ReviewDecision.objects.bulk_create([ReviewDecision(record=r, reviewer=user, from_status=r.review_status,
                                                           to_status=to_status, comment=comment) for r in moving])
        if comment:
            ReviewComment.objects.bulk_create([ReviewComment(record=r, author=user, text=comment) for r in moving])
        audit_record_many(actor=reviewer, action="review.decided", objs=moving,
                          changes=[{"review_status": [r.review_status, to_status], "comment": comment} for r in moving])
        changed = SurveyRecord.objects.filter(pk__in=[r.pk for r in moving]).update(
            review_status=to_status, auto_approved=False)
    return changed


def review_comment(*, record: SurveyRecord, author: AbstractBaseUser | AnonymousUser, text: str) -> ReviewComment:
    if not text.strip():
        raise ReviewError("a comment needs text")
    with transaction.atomic():
        c = ReviewComment.objects.create(record=record, author=author if author.is_authenticated else None, text=text)
        audit_record(actor=author, action="review.commented", obj=record, changes={"comment": text})
    return c


def record_correct(*, record: SurveyRecord, changes: dict[str, Any], reviewer: AbstractBaseUser | AnonymousUser,
                   comment: str = "") -> SurveyRecord:
    """A reviewer's correction: a new version that supersedes the record, validated by the same
    rules; the old version is kept untouched.  Raises ReviewError listing any error findings."""
    unknown = set(changes) - set(SURVEY_VALUE_FIELDS)
    if unknown:
        raise ReviewError(f"not survey fields: {', '.join(sorted(unknown))}")

    def text(v: Any) -> str:
        return "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip()

    changes = {k: v for k, v in changes.items() if text(v) != text(record.data.get(k))}
    if not changes:  # a version identical to the last would only re-approve the record with no trace of why
        raise ReviewError("nothing changed: a correction needs at least one new value")
    current = {**record.data, **changes}
    raw: dict[str, Any] = {k: ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)]
                           for k, v in current.items()}
    raw.update(_metadata_columns([record.collected_at], [record.gps]))  # checked again, as at receipt
    schema = current_schema()
    result = validate_frame(raw, [f for f in schema.fields if f.name in raw],
                            tol_abs=settings.RTV_IDENTITY_TOLERANCE_ABS, tol_rel=settings.RTV_IDENTITY_TOLERANCE_REL)
    errors = result.issues[result.issues["severity"] == "error"]
    if len(errors):
        raise ReviewError("; ".join(f"{r.field}: {r.message}" for r in errors.itertuples()))
    from features.labels import income_per_day, is_vulnerable, progress_status

    typed = result.typed
    too_long = [f"{name}: longer than {limit} characters" for name, limit in STORED_TEXT_LIMITS.items()
                if name in typed and isinstance(typed[name].iloc[0], str) and len(typed[name].iloc[0].strip()) > limit]
    with_nul = [f"{name}: contains a NUL character, which cannot be stored" for name, v in current.items()
                if isinstance(v, str) and "\x00" in v]
    if too_long or with_nul:
        raise ReviewError("; ".join(too_long + with_nul))
    per_day = float(income_per_day(typed).iloc[0])
    status = progress_status(pd.Series([per_day])).iloc[0]
    score = result.scores.iloc[0]
    values = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in typed.iloc[0].to_dict().items()
              if k in SURVEY_VALUE_FIELDS}
    with transaction.atomic():
        old = SurveyRecord.objects.select_for_update().get(pk=record.pk)
        if SurveyRecord.objects.filter(supersedes=old).exists():
            raise ReviewError("this version was already corrected; correct the latest version")
        # A corrected household id moves the new version to that household (its lineage, its latest
        # record, its earlier surveys); the old version stays with the household it named.
        household = old.household
        named = str(values.get("household_id") or "").strip()
        if named and named != household.household_id:
            household, _ = Household.objects.get_or_create(household_id=named, defaults={
                "district": values.get("district") or "", "village": values.get("village") or ""})
        new = SurveyRecord.objects.create(
            household=household, batch=old.batch, row_number=old.row_number, survey_round=old.survey_round,
            version=old.version + 1, supersedes=old, root_id=old.root_id or old.pk,
            submission_id=uuid.uuid4() if old.submission_id else None, content_hash=_corrected_hash(old.content_hash, changes),
            district=values.get("district") or "", cluster=values.get("cluster") or "", village=values.get("village") or "",
            household_size=values.get("household_size"), income_per_day=None if np.isnan(per_day) else per_day,
            progress_status=status or "", vulnerable=is_vulnerable(pd.Series([status])).iloc[0],
            review_status=Status.APPROVED, auto_approved=False, warning_count=int((result.issues["severity"] == "warning").sum()),
            quality_score=float(score["score"]), completeness=float(score["completeness"]),
            validity=float(score["validity"]), consistency=float(score["consistency"]),
            collected_at=old.collected_at, form_version=old.form_version, device_id=old.device_id,
            field_officer=old.field_officer, gps=old.gps, raw=old.raw, answers_hash=stored_value(record_answers_hashes([values])[0]))
        SurveyValues.objects.create(record=new, **values)
        RowIssue.objects.bulk_create([RowIssue(batch=old.batch, record=new, row_number=old.row_number or 0,
                                               household_id=household.household_id, field=r.field, column=r.field,
                                               rule=r.rule, severity=r.severity, value=r.value, message=r.message)
                                      for r in result.issues.itertuples()])
        ReviewDecision.objects.create(record=new, reviewer=reviewer if reviewer.is_authenticated else None,
                                      from_status=old.review_status, to_status=Status.APPROVED,
                                      comment=comment or "corrected")
        before = old.data
        after = new.data
        diff = {k: [before.get(k), after.get(k)] for k in changes if before.get(k) != after.get(k)}
        audit_record(actor=reviewer, action="review.corrected", obj=new, changes={"supersedes": old.pk, **diff})
    return new




def _corrected_hash(previous: str, changes: dict[str, Any]) -> str:
    """A correction's content hash: of the version it corrects and the changes (64 hex characters,
    as a device's; appending to a device's hash overflowed the column)."""
    text = previous + json.dumps(changes, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _metadata_columns(collected: list[Any], gps: list[Any]) -> dict[str, Any]:
    """A stored record's envelope metadata as the validator's columns, as a device's submission
    gives them: the time it was collected and the GPS point (the rules on them: not in the future,
    inside Uganda)."""
    def coordinate(point: Any, key: str) -> float:
        value = (point or {}).get(key)
        return float(value) if isinstance(value, int | float) else np.nan

    return {"collected_at": [c.isoformat() if c is not None and not pd.isna(c) else "" for c in collected],
            "gps_lat": np.array([coordinate(p, "lat") for p in gps], dtype="float64"),
            "gps_lon": np.array([coordinate(p, "lon") for p in gps], dtype="float64")}


def quality_snapshot_take(*, day: Any = None) -> Any:
    """Re-validate one day's records (received that local day; by default yesterday) with the current
    rules and record that day's quality under its date (idempotent per day).  A drop in the mean
    score beyond the threshold raises an alert."""
    from datetime import timedelta

    from .models import QualityAlert, QualitySnapshot

    day = day or timezone.localdate() - timedelta(days=1)
    start = timezone.make_aware(datetime.combine(day, datetime.min.time()))
    end = timezone.make_aware(datetime.combine(day + timedelta(days=1), datetime.min.time()))
    records = SurveyRecord.objects.filter(received_at__gte=start, received_at__lt=end, superseded_by__isnull=True)
    rows = list(records.values_list("pk", "district", "collected_at", "gps",
                                    *(f"values__{f}" for f in SURVEY_VALUE_FIELDS)))
    by_rule: dict[str, int] = {}
    by_district: dict[str, dict[str, Any]] = {}
    errors = warnings = 0
    scores = None
    if rows:
        frame = pd.DataFrame.from_records(rows, columns=["_pk", "_district", "_collected_at", "_gps", *SURVEY_VALUE_FIELDS])
        raw: dict[str, Any] = {c: frame[c] for c in SURVEY_VALUE_FIELDS}  # typed: the validator skips parsing
        raw.update(_metadata_columns(frame["_collected_at"].tolist(), frame["_gps"].tolist()))
        schema = current_schema()
        result = validate_frame(raw, [f for f in schema.fields if f.name in raw],
                                tol_abs=settings.RTV_IDENTITY_TOLERANCE_ABS, tol_rel=settings.RTV_IDENTITY_TOLERANCE_REL)
        issues = result.issues
        errors = int((issues["severity"] == "error").sum())
        warnings = int((issues["severity"] == "warning").sum())
        by_rule = {str(k): int(v) for k, v in issues.groupby(["rule"]).size().items()} if len(issues) else {}
        scores = result.scores
        per_district = scores.assign(d=frame["_district"].to_numpy()).groupby("d")["score"].agg(["mean", "count"])
        by_district = {str(d): {"mean_score": float(r["mean"]), "records": int(r["count"])} for d, r in per_district.iterrows()}
    with transaction.atomic():
        snap, _ = QualitySnapshot.objects.update_or_create(day=day, defaults={
            "records": len(rows), "errors": errors, "warnings": warnings,
            "mean_score": None if scores is None else float(scores["score"].mean()),
            "completeness": None if scores is None else float(scores["completeness"].mean()),
            "validity": None if scores is None else float(scores["validity"].mean()),
            "consistency": None if scores is None else float(scores["consistency"].mean()),
            "by_rule": {str(k[0] if isinstance(k, tuple) else k): v for k, v in by_rule.items()},
            "by_district": by_district})
        previous = QualitySnapshot.objects.filter(day__lt=day, mean_score__isnull=False).order_by("-day").first()
        threshold = settings.RTV_QUALITY_DROP_ALERT
        # One alert per day and metric however often the day is taken again (a re-run updates it; one
        # already delivered is not sent twice; a drop that no longer holds takes back an unsent one).
        if previous and snap.mean_score is not None and previous.mean_score - snap.mean_score > threshold:
            QualityAlert.objects.update_or_create(snapshot=snap, metric="mean_score", defaults={
                "previous": previous.mean_score, "current": snap.mean_score, "threshold": threshold,
                "message": f"Mean quality score fell from {previous.mean_score:.3f} ({previous.day}) to "
                           f"{snap.mean_score:.3f} ({day}), more than {threshold:g}."})
        else:
            QualityAlert.objects.filter(snapshot=snap, metric="mean_score", delivered_at__isnull=True).delete()
    return snap
