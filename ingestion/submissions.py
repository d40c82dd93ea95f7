"""Device submissions: the one write path for records sent by the mobile app.

Identity is the device's submission UUID (or the Idempotency-Key header).  An identical resend
is answered as a success naming the stored record and stores nothing; the same id with other
content is a conflict, unless the body says it supersedes an earlier submission, which makes a
new version (the old one is kept).  A PostgreSQL advisory lock on the id serialises simultaneous
uploads of one submission; the unique constraint on ``submission_id`` is the backstop.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from features.labels import income_per_day, is_vulnerable, progress_status
from quality.engine import validate_frame
from rtv import contract
from rtv.outbox import outbox_enqueue
from rtv.selectors import Schema, current_schema

from .models import SURVEY_VALUE_FIELDS, Household, IngestionBatch, RowIssue, SurveyRecord, SurveyValues

SURVEY_NAMES = [f.name for f in contract.SURVEY_FIELDS]


@dataclass
class Envelope:
    """A submission as the API validated its envelope (types, not survey rules)."""

    submission_id: uuid.UUID
    data: dict[str, Any]
    form_version: str = ""
    collected_at: Any = None  # aware datetime
    device_id: str = ""
    location: dict[str, float] | None = None
    supersedes: uuid.UUID | None = None

    def content_hash(self) -> str:
        body = {
            "data": self.data, "form_version": self.form_version, "device_id": self.device_id,
            "collected_at": self.collected_at.isoformat() if self.collected_at else None,
            "location": self.location, "supersedes": str(self.supersedes) if self.supersedes else None,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Outcome:
    result: str  # created | replayed | conflict | invalid
    http_status: int
    record: SurveyRecord | None = None
    code: str = ""
    message: str = ""
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return " ".join(_text(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _validate(envelopes: list[Envelope], schema: Schema) -> tuple[pd.DataFrame, pd.DataFrame, list[list[str]]]:
    """Validate all items at once (one vectorised pass); also report unknown data keys."""
    known = set(SURVEY_NAMES)
    unknown = [sorted(set(e.data) - known) for e in envelopes]
    raw = pd.DataFrame([{k: _text(e.data.get(k)) for k in SURVEY_NAMES} for e in envelopes], columns=SURVEY_NAMES)
    fields = [f for f in schema.fields if f.name in known]
    result = validate_frame(raw, fields, tol_abs=settings.RTV_IDENTITY_TOLERANCE_ABS,
                            tol_rel=settings.RTV_IDENTITY_TOLERANCE_REL)
    return result.typed, result.issues, unknown


def _lock(submission_id: uuid.UUID) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [str(submission_id)])


def submissions_receive(*, user: AbstractBaseUser | AnonymousUser, envelopes: list[Envelope],
                        user_agent: str = "") -> list[Outcome]:
    """Receive one or many submissions; each item succeeds or fails on its own."""
    if not envelopes:
        return []
    schema = current_schema()
    typed, issues, unknown = _validate(envelopes, schema)
    per_day = income_per_day(typed)
    status = progress_status(per_day)
    vulnerable = is_vulnerable(status)
    error_rows = set(issues.loc[issues["severity"] == "error", "row"].astype(int))
    by_row = {int(r): g for r, g in issues.groupby("row")} if len(issues) else {}
    outcomes: list[Outcome] = []
    batch: IngestionBatch | None = None
    for i, env in enumerate(envelopes):
        item_issues = by_row.get(i)
        errors = [] if item_issues is None else [
            {"field": f"data.{r.field}", "code": r.rule, "message": r.message}
            for r in item_issues.itertuples() if r.severity == "error"]
        errors += [{"field": f"data.{k}", "code": "unknown_field", "message": f"{k} is not a field of the survey"}
                   for k in unknown[i]]
        warnings = [] if item_issues is None else [
            {"field": f"data.{r.field}", "code": r.rule, "message": r.message}
            for r in item_issues.itertuples() if r.severity == "warning"]
        try:
            with transaction.atomic():
                _lock(env.submission_id)
                chash = env.content_hash()
                existing = SurveyRecord.objects.filter(submission_id=env.submission_id).first()
                if existing is not None:
                    outcomes.append(_existing(existing, chash))
                    continue
                if i in error_rows or unknown[i]:
                    outcomes.append(Outcome("invalid", 400, code="invalid_submission",
                                            message="The submission has invalid fields; nothing was stored.",
                                            errors=errors, warnings=warnings))
                    continue
                prior = None
                if env.supersedes is not None:
                    prior = SurveyRecord.objects.select_for_update().filter(submission_id=env.supersedes).first()
                    if prior is None:
                        outcomes.append(Outcome("invalid", 409, code="supersedes_not_found",
                                                message="The submission this one supersedes is not stored.",
                                                errors=[{"field": "supersedes", "code": "not_found",
                                                         "message": str(env.supersedes)}]))
                        continue
                    if SurveyRecord.objects.filter(supersedes=prior).exists():
                        outcomes.append(Outcome("conflict", 409, code="already_superseded",
                                                message="That submission was already superseded; supersede the latest "
                                                        "version instead.",
                                                errors=[{"field": "supersedes", "code": "already_superseded",
                                                         "message": str(env.supersedes)}]))
                        continue
                if batch is None:
                    batch = IngestionBatch.objects.create(
                        channel=IngestionBatch.Channel.DEVICE, source=user_agent[:120], format="json",
                        created_by=user if user.is_authenticated else None, status=IngestionBatch.Status.SUCCEEDED,
                        schema_version=schema.version, finished_at=timezone.now(),
                    )
                record = _create(env, chash, batch, user, typed.iloc[i], per_day.iloc[i], status.iloc[i],
                                 vulnerable.iloc[i], item_issues, prior)
                outcomes.append(Outcome("created", 201, record=record, warnings=warnings))
        except IntegrityError:
            # The lock makes this unreachable on PostgreSQL; elsewhere the constraint decides.
            existing = SurveyRecord.objects.get(submission_id=env.submission_id)
            outcomes.append(_existing(existing, env.content_hash()))
    if batch is not None:
        created = sum(1 for o in outcomes if o.result == "created")
        IngestionBatch.objects.filter(pk=batch.pk).update(
            row_count=len(envelopes), accepted=created, rejected=sum(1 for o in outcomes if o.result == "invalid"),
            warnings=sum(1 for o in outcomes if o.result == "created" and o.warnings))
    return outcomes


def _existing(record: SurveyRecord, content_hash: str) -> Outcome:
    if record.content_hash == content_hash:
        return Outcome("replayed", 200, record=record)
    return Outcome("conflict", 409, record=record, code="submission_conflict",
                   message="A different submission with this id is already stored. To correct it, send a new "
                           "submission_id with \"supersedes\" set to this one.",
                   errors=[{"field": "submission_id", "code": "submission_conflict", "message": str(record.submission_id)}])


def _create(env: Envelope, chash: str, batch: IngestionBatch, user: AbstractBaseUser | AnonymousUser,
            typed_row: pd.Series, per_day: float, status: str, vulnerable: Any, item_issues: pd.DataFrame | None,
            prior: SurveyRecord | None) -> SurveyRecord:
    data = {k: (None if _missing(v) else _plain(v)) for k, v in typed_row.items()}
    household, _ = Household.objects.get_or_create(
        household_id=data["household_id"], defaults={"district": data.get("district") or "",
                                                     "village": data.get("village") or ""})
    record = SurveyRecord.objects.create(
        household=household, batch=batch, submission_id=env.submission_id, content_hash=chash,
        version=(prior.version + 1) if prior else 1, supersedes=prior,
        root_id=(prior.root_id or prior.pk) if prior else None,
        district=data.get("district") or "", cluster=data.get("cluster") or "", village=data.get("village") or "",
        household_size=data.get("household_size"), raw=env.data,
        income_per_day=None if _missing(per_day) else float(per_day), progress_status=status or "",
        vulnerable=vulnerable, warning_count=0 if item_issues is None else int((item_issues.severity == "warning").sum()),
        collected_at=env.collected_at, form_version=env.form_version, device_id=env.device_id,
        field_officer=user if user.is_authenticated else None, gps=env.location,
    )
    SurveyValues.objects.create(record=record, **{k: data.get(k) for k in SURVEY_VALUE_FIELDS})
    if item_issues is not None and len(item_issues):
        RowIssue.objects.bulk_create([
            RowIssue(batch=batch, record=record, row_number=0, household_id=data["household_id"] or "",
                     field=r.field, column=r.field, rule=r.rule, severity=r.severity, value=r.value, message=r.message)
            for r in item_issues.itertuples()])
    outbox_enqueue("ingestion.after_submission", record.pk)
    return record


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    return v


def version_chain(record: SurveyRecord) -> list[SurveyRecord]:
    """Every version of the record's history, oldest first (one query: versions share a root)."""
    root = record.root_id or record.pk
    versions = SurveyRecord.objects.filter(models.Q(pk=root) | models.Q(root_id=root)).select_related("values")
    return sorted(versions, key=lambda r: r.version)


def field_diff(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"field": k, "old": old.get(k), "new": new.get(k)}
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
