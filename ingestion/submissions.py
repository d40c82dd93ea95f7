"""Device submissions: the one write path for records sent by the mobile app.

Identity is the device's submission UUID (or the Idempotency-Key header).  An identical resend
is answered as a success naming the stored record and stores nothing; the same id with other
content is a conflict, unless the body says it supersedes an earlier submission, which makes a
new version (the old one is kept).  The unique constraint on ``submission_id`` decides races: a
single submission is inserted straight away (a simultaneous twin waits on the index, then loses and
is answered as a replay); a device batch first takes PostgreSQL advisory locks on its ids and reads
which exist.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from features.labels import income_per_day_values, is_vulnerable_values, overflowing_income, progress_status_values
from quality.duplicates import record_answers_hashes, stored_matches, stored_value, within
from quality.engine import ValidationResult, validate_frame
from quality.reference import stored_reference
from quality.rules import active_rules
from rtv import contract
from rtv.bulk import Expression, copy_frame, insert_returning_keys, insert_statement, server_bound_cursor
from rtv.fields import fernet
from rtv.models import OutboxMessage
from rtv.outbox import outbox_after_commit, outbox_enqueue
from rtv.selectors import Schema, current_schema
from rtv.storage import area_path

from .models import (
    STORED_TEXT_LIMITS,
    SURVEY_VALUE_FIELDS,
    DeviceRequest,
    Household,
    IngestionBatch,
    RowIssue,
    SurveyRecord,
    SurveyValues,
)
from .selectors import records_visible_to

SURVEY_NAMES = [f.name for f in contract.SURVEY_FIELDS]
INVALID_MESSAGE = "The submission has invalid fields; nothing was stored."
log = logging.getLogger(__name__)

COPY_FROM_ROWS = 20


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
    # The item's place in its request (0 for a single submission), not part of its identity: a
    # finding's row, numbered as the same records sent as a JSON file would be (the first is row 2,
    # a spreadsheet's header being row 1), whatever the door.
    position: int = field(default=0, compare=False)

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


def _validate(envelopes: list[Envelope], schema: Schema) -> tuple[ValidationResult, list[list[dict[str, Any]]]]:
    """Validate all items at once (one vectorised pass): typed values, quality scores (score,
    completeness, validity, consistency), findings; also each item's refusals the rules do not make:
    unknown data keys, and text longer than its column holds."""
    known = set(SURVEY_NAMES)
    refused = [[{"field": f"data.{_shown(k)}", "code": "unknown_field",
                 "message": f"{_shown(k)} is not a field of the survey"}
                for k in sorted(set(e.data) - known)] for e in envelopes]
    raw: dict[str, list[object]] = {k: [] for k in SURVEY_NAMES}
    for i, e in enumerate(envelopes):
        for k in SURVEY_NAMES:
            value = e.data.get(k)
            wrong = _unstorable(k, value)
            if wrong:
                refused[i].append({"field": f"data.{k}", "code": wrong[0], "message": f"{k} {wrong[1]}"})
                value = None  # the item is refused; its other fields are still checked
            raw[k].append(_text(value))
    for name, limit in STORED_TEXT_LIMITS.items():
        for i, text in enumerate(raw[name]):
            if len(str(text).strip()) > limit:
                refused[i].append({"field": f"data.{name}", "code": "too_long",
                                   "message": f"{name} is longer than {limit} characters"})
    # The envelope's metadata is checked by the same rules (GPS inside Uganda, not in the future).
    raw["collected_at"] = [e.collected_at.isoformat() if e.collected_at else "" for e in envelopes]
    raw["gps_lat"] = [_text((e.location or {}).get("lat")) for e in envelopes]
    raw["gps_lon"] = [_text((e.location or {}).get("lon")) for e in envelopes]
    fields = [f for f in schema.fields if f.name in raw]
    rules = active_rules()
    # A device's values are outliers against their district's stored records, not against each other.
    result = validate_frame(raw, fields, rules=rules, tol_abs=settings.RTV_IDENTITY_TOLERANCE_ABS,
                            tol_rel=settings.RTV_IDENTITY_TOLERANCE_REL, reference=stored_reference(rules))
    for i, name in overflowing_income(result.typed_columns()):
        refused[i].append({"field": f"data.{name}", "code": "out_of_range",
                           "message": "the income components add up to more than a number can hold"})
    return result, refused


MULTISELECT_FIELDS = frozenset(f.name for f in contract.SURVEY_FIELDS if f.type == "multiselect")
# Yes/no questions (codes 0 and 1 only): JSON true and false are their answers.  Anywhere else a
# boolean would pass as 1 or 0 (a household of `true` is 1 person; `true` for hhh_sex is "male").
YES_NO_FIELDS = frozenset(f.name for f in contract.SURVEY_FIELDS if f.type == "boolean"
                          or (f.type == "code" and f.allowed is not None and set(f.allowed) == {0, 1}))
_SURROGATE = re.compile("[\ud800-\udfff]")


def answerable(text: str) -> bool:
    """Whether text can go into an answer as it is (a lone surrogate cannot be encoded as UTF-8)."""
    return _SURROGATE.search(text) is None


def _shown(text: str) -> str:
    """Text safe to echo in an answer (a lone surrogate cannot be encoded as UTF-8)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _unstorable(name: str, value: Any) -> tuple[str, str] | None:
    """(code, message) when a data value cannot be stored or answered as JSON text, or would be read
    as something it does not say: an object, a list outside a multi-select answer, true/false outside
    a yes/no question, a number too large for a float (1e400 arrives as infinity), text holding NUL
    (PostgreSQL refuses it) or a lone surrogate (not UTF-8)."""
    if isinstance(value, bool):
        return None if name in YES_NO_FIELDS else ("invalid_type", "must be a number or text, not true or false")
    if isinstance(value, dict):
        return "invalid_type", "must be a single value, not an object"
    if isinstance(value, list):
        if name not in MULTISELECT_FIELDS:
            return "invalid_type", "must be a single value, not a list"
        for v in value:
            wrong = _unstorable("", v)
            if wrong or isinstance(v, list):
                return wrong or ("invalid_type", "must be a list of codes")
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "invalid_number", "is too large for a number"
    if isinstance(value, str):
        if "\x00" in value:
            return "invalid_characters", "contains a NUL character (\\u0000), which cannot be stored"
        if not answerable(value):
            return "invalid_characters", "contains a lone surrogate, which is not text (UTF-8)"
    return None


def _item_errors(issues: list[dict[str, Any]], refused: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules' errors and the refusals; a refused value was validated as missing, so the rules'
    findings on that field (required, say) are left out: the refusal says what is wrong."""
    taken = {r["field"] for r in refused}
    errors = [e for e in (_public(r) for r in issues if r["severity"] == "error") if e["field"] not in taken]
    return errors + refused


def payloads_check(envelopes: list[Envelope]) -> tuple[pd.DataFrame, list[list[dict[str, Any]]]]:
    """Receipt's validation with nothing written (the prediction API scores unsaved payloads):
    the typed values, and each item's errors in the API's shape (empty when it is valid)."""
    result, unknown = _validate(envelopes, current_schema())
    issues = result.issue_records()
    by_row: dict[int, list[dict[str, Any]]] = {}
    for issue in issues:
        by_row.setdefault(int(issue["row"]), []).append(issue)
    return result.typed, [_item_errors(by_row.get(i, []), unknown[i]) for i in range(len(envelopes))]


def _lock_all(ids: list[uuid.UUID]) -> None:
    """Serialise concurrent uploads of the same submissions (sorted: no lock-order deadlocks)."""
    if connection.vendor == "postgresql" and ids:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(s, 0)) FROM unnest(%s::text[]) AS s",
                        [sorted({str(i) for i in ids})])


def submissions_receive(*, user: AbstractBaseUser | AnonymousUser, envelopes: list[Envelope],
                        user_agent: str = "", body: bytes = b"") -> list[Outcome | None]:
    """Receive one or many submissions in one transaction; each item succeeds or fails on its own.

    Invalid items are refused before anything is written, so the transaction holds only items
    that will be stored: one device batch costs a fixed number of queries, not a few per item.
    ``body``: the request as received, which the device batch keeps (its sha256 and size now, the
    bytes under raw/ once a worker has written them: storage is not on the request's path)."""
    if not envelopes:
        return []
    started = time.perf_counter()
    schema = current_schema()
    result, unknown = _validate(envelopes, schema)
    issues = result.issue_records()
    per_day = income_per_day_values(result.typed_columns())
    status = progress_status_values(per_day)
    vulnerable = is_vulnerable_values(status)
    typed_rows = result.typed_records()
    quality = result.score_records()
    by_row: dict[int, list[dict[str, Any]]] = {}
    for issue in issues:  # few rows: plain dicts beat pandas grouping here
        by_row.setdefault(int(issue["row"]), []).append(issue)

    outcomes: list[Outcome | None] = [None] * len(envelopes)
    hashes = [e.content_hash() for e in envelopes]
    candidates: list[int] = []
    for i in range(len(envelopes)):
        errors = _item_errors(by_row.get(i, []), unknown[i])
        if errors:
            warnings = [_public(r) for r in by_row.get(i, []) if r["severity"] == "warning"]
            outcomes[i] = Outcome("invalid", 400, code="invalid_submission",
                                  message=INVALID_MESSAGE,
                                  errors=errors, warnings=warnings)
        else:
            candidates.append(i)

    # One submission is stored optimistically: no lock and no look-up first, the unique constraint
    # on submission_id is the arbiter (a simultaneous twin waits on it, then fails here).  Requests of
    # several items take the checked path: lock the ids, read what exists.  Locks only order checked
    # requests, so any request can still lose an id to an optimistic one: it then starts over, checked,
    # and finds the winner's record.  Each retry follows a commit of one of its ids, so it ends.
    # Corrections are checked too: their refusals (prior missing or already superseded) are decided by
    # reading, and a resent correction must be found as the stored record, not refused.
    checked = (len(candidates) > 1 or connection.vendor != "postgresql"  # SQLite names no constraint in its errors
               or any(envelopes[i].supersedes is not None for i in candidates))
    rejected = sum(1 for o in outcomes if o and o.result == "invalid")
    request = _Request(body, round(time.perf_counter() - started, 4))
    for retry in range(len(candidates) + 1):
        attempt = list(outcomes)
        findings = {i: list(rows) for i, rows in by_row.items()}  # an attempt's additions go with its rollback
        try:
            _store(user, user_agent, schema, envelopes, candidates, attempt, hashes, typed_rows, quality, per_day,
                   status, vulnerable, findings, rejected, result, request, checked=checked)
        except IntegrityError as exc:
            if retry == len(candidates) or not _identity_clash(exc):
                raise
            checked = True
            continue
        outcomes = attempt
        break
    for o in outcomes:  # a repeat inside the request names the record its first copy created
        if o is not None and hasattr(o, "record_of"):
            o.record = outcomes[o.record_of].record  # type: ignore[union-attr]
    return outcomes


def _identity_clash(exc: IntegrityError) -> bool:
    """The insert lost a race for a submission id or a superseded record (another request stored it)."""
    name = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None) or str(exc)
    return "record_unique_submission" in name or "record_superseded_once" in name


def _store(user: AbstractBaseUser | AnonymousUser, user_agent: str, schema: Schema, envelopes: list[Envelope],
           candidates: list[int], outcomes: list[Outcome | None], hashes: list[str], typed_rows: list[dict[str, Any]],
           quality: list[dict[str, Any]], per_day: np.ndarray, status: np.ndarray, vulnerable: np.ndarray,
           by_row: dict[int, list[dict[str, Any]]], rejected: int, result: ValidationResult, request: _Request, *,
           checked: bool) -> None:
    """Decide each valid item's fate (created, replayed, conflict) and write the new ones, in one
    transaction.  Unchecked (one item, first try) it assumes the id is new and lets the database say
    otherwise."""
    with transaction.atomic():
        ids = [envelopes[i].submission_id for i in candidates]
        existing: dict[uuid.UUID, SurveyRecord | None] = {}
        if checked:
            _lock_all(ids)
            found = {r.submission_id: r for r in
                     SurveyRecord.objects.filter(submission_id__in=ids).select_related("household")} if ids else {}
            # A stored id the sender may not see is theirs to know as taken, nothing more (None): not
            # the record, nor whether their content matches it.
            visible = set(records_visible_to(user).filter(pk__in=[r.pk for r in found.values()])
                          .values_list("pk", flat=True)) if found else set()
            existing = {sid: (r if r.pk in visible else None) for sid, r in found.items()}
        prior_ids = [envelopes[i].supersedes for i in candidates if envelopes[i].supersedes is not None]
        # Only a record the sender may see can be corrected: a field officer corrects their own (another
        # officer's is "not stored" to them, as it is on GET: its id and diff stay theirs).
        # The records corrected are locked before their correctors are looked for (as a reviewer's
        # correction locks the one it corrects): whichever comes second then sees the first's
        # correction and is refused, rather than the two deadlocking at commit.
        priors = ({r.submission_id: r for r in records_visible_to(user).filter(submission_id__in=prior_ids)
                   .select_for_update().order_by("pk")} if prior_ids else {})
        taken = set(SurveyRecord.objects.filter(supersedes__in=list(priors.values()))
                    .values_list("supersedes_id", flat=True)) if priors else set()
        # A correction may supersede an item of this same request (a device back online sends an original
        # and its correction together): it is decided after that item, and written in a later wave.
        new: list[int] = []
        wave: dict[int, int] = {}
        seen: dict[uuid.UUID, int] = {}  # submission id -> the item of this request that stores it
        superseded_here: dict[uuid.UUID, uuid.UUID] = {}  # prior's submission id -> the correction's
        heads: dict[int, uuid.UUID] = {}  # item -> a DB prior it found already superseded (named below)
        remaining = list(candidates)
        while remaining:
            waiting = Counter(envelopes[i].submission_id for i in remaining)
            later: list[int] = []
            for i in remaining:
                env = envelopes[i]
                s = env.supersedes
                if s is not None and s not in priors and s not in seen and waiting[s] > 0:
                    later.append(i)  # its prior is an item of this request not decided yet
                    continue
                waiting[env.submission_id] -= 1
                _decide(i, env, hashes, existing, seen, priors, taken, superseded_here, wave, new, heads, outcomes)
            if len(later) == len(remaining):  # supersedes links that go round: none can be first
                for i in later:
                    outcomes[i] = _not_found(envelopes[i].supersedes)
                break
            remaining = later
        if heads:
            _name_latest(heads, priors, outcomes)
        batch: IngestionBatch | None = None
        for w in sorted(set(wave.values())):
            part = [i for i in new if wave[i] == w]
            records = _create_all(user, user_agent, schema, envelopes, part, typed_rows, quality, per_day, status,
                                  vulnerable, by_row, hashes, priors, rejected=rejected, result=result, batch=batch,
                                  counted=new, request=request)
            batch = records[0].batch
            for i, record in zip(part, records, strict=True):
                priors[envelopes[i].submission_id] = record  # the prior of the next wave's corrections
                outcomes[i] = Outcome("created", 201, record=record,
                                      warnings=[_public(r) for r in by_row.get(i, []) if r["severity"] == "warning"])
        if batch is not None and len(set(wave.values())) > 1:
            # The batch row was written with the first wave; a later wave's item may have gained a finding since.
            warned = sum(1 for i in new if any(r["severity"] == "warning" for r in by_row.get(i, ())))
            if warned != batch.warnings:
                IngestionBatch.objects.filter(pk=batch.pk).update(warnings=warned)
                batch.warnings = warned


def _decide(i: int, env: Envelope, hashes: list[str], existing: dict[uuid.UUID, SurveyRecord | None],
            seen: dict[uuid.UUID, int], priors: dict[uuid.UUID, SurveyRecord], taken: set[int],
            superseded_here: dict[uuid.UUID, uuid.UUID], wave: dict[int, int], new: list[int],
            heads: dict[int, uuid.UUID], outcomes: list[Outcome | None]) -> None:
    """One valid item's fate: a replay or conflict of what is stored or of an earlier item, a refused
    correction, or new (with the wave that writes it: one after its prior's when that is in the request)."""
    if env.submission_id in existing:
        outcomes[i] = _existing(existing[env.submission_id], hashes[i], env.submission_id)
        return
    if env.submission_id in seen:  # the same id twice in one request
        first = seen[env.submission_id]
        outcomes[i] = Outcome("replayed", 200) if hashes[first] == hashes[i] else Outcome(
            "conflict", 409, code="submission_conflict", message="This id appears twice with different content.",
            errors=[{"field": "submission_id", "code": "submission_conflict", "message": str(env.submission_id)}])
        outcomes[i].record_of = first  # type: ignore[union-attr]
        return
    w = 0
    if (s := env.supersedes) is not None:
        prior = priors.get(s)
        if prior is None and s not in seen:
            outcomes[i] = _not_found(s)
            return
        if s in superseded_here:  # an earlier item of this request corrects the same one
            outcomes[i] = _already_superseded(s, superseded_here[s])
            return
        if prior is not None and prior.pk in taken:
            heads[i] = s
            return
        superseded_here[s] = env.submission_id
        if prior is None:
            w = wave[seen[s]] + 1
    seen[env.submission_id] = i
    wave[i] = w
    new.append(i)


def _not_found(supersedes: uuid.UUID | None) -> Outcome:
    return Outcome("invalid", 409, code="supersedes_not_found",
                   message="The submission this one supersedes is not stored.",
                   errors=[{"field": "supersedes", "code": "not_found", "message": str(supersedes)}])


def _already_superseded(supersedes: uuid.UUID, latest: uuid.UUID, record: SurveyRecord | None = None) -> Outcome:
    """A correction of a superseded version: refused, naming the version to supersede instead (with
    the stored record when it is stored)."""
    return Outcome("conflict", 409, record=record, code="already_superseded",
                   message=f"That submission was already superseded; supersede the latest version ({latest}) instead.",
                   errors=[{"field": "supersedes", "code": "already_superseded", "message": str(supersedes)}])


def _name_latest(heads: dict[int, uuid.UUID], priors: dict[uuid.UUID, SurveyRecord],
                 outcomes: list[Outcome | None]) -> None:
    """Refuse corrections of superseded records, naming each history's current version (one query):
    what the device must supersede instead, e.g. a reviewer's correction it never saw."""
    roots = {priors[s].root_id or priors[s].pk for s in heads.values()}
    current = {r.root_id or r.pk: r for r in SurveyRecord.objects.filter(
        models.Q(pk__in=roots) | models.Q(root_id__in=roots), superseded_by__isnull=True)}
    for i, s in heads.items():
        prior = priors[s]
        latest = current.get(prior.root_id or prior.pk)
        outcomes[i] = _already_superseded(s, latest.submission_id if latest and latest.submission_id else s,
                                          record=latest)


# The envelope's metadata, checked by the same rules as the answers, is named where the sender put it.
ENVELOPE_FIELDS = {"collected_at": "collected_at", "gps_lat": "location.lat", "gps_lon": "location.lon",
                   "gps_accuracy_m": "location.accuracy_m"}


def _public(issue: dict[str, Any]) -> dict[str, Any]:
    field = ENVELOPE_FIELDS.get(issue["field"]) or f"data.{issue['field']}"
    return {"field": field, "code": issue["rule"], "message": issue["message"]}


def _existing(record: SurveyRecord | None, content_hash: str, submission_id: uuid.UUID) -> Outcome:
    """A replay or a conflict of the stored record; ``None``: stored, but not the sender's to see
    (another officer's): refused the same whatever the content, naming nothing of it."""
    if record is None:
        return Outcome("conflict", 409, code="submission_id_taken",
                       message="This submission id is already used by a submission you cannot see; send this "
                               "submission with a new submission_id.",
                       errors=[{"field": "submission_id", "code": "submission_id_taken", "message": str(submission_id)}])
    if record.content_hash == content_hash:
        return Outcome("replayed", 200, record=record)
    return Outcome("conflict", 409, record=record, code="submission_conflict",
                   message="A different submission with this id is already stored. To correct it, send a new "
                           "submission_id with \"supersedes\" set to this one.",
                   errors=[{"field": "submission_id", "code": "submission_conflict", "message": str(record.submission_id)}])


def _create_all(user: AbstractBaseUser | AnonymousUser, user_agent: str, schema: Schema, envelopes: list[Envelope],
                new: list[int], typed_rows: list[dict[str, Any]], quality: list[dict[str, Any]], per_day: np.ndarray,
                status: np.ndarray,
                vulnerable: np.ndarray, by_row: dict[int, list[dict[str, Any]]], hashes: list[str],
                priors: dict[uuid.UUID, SurveyRecord], rejected: int, result: ValidationResult,
                batch: IngestionBatch | None = None, counted: list[int] | None = None,
                request: _Request | None = None) -> list[SurveyRecord]:
    """Bulk-write the new items: households, one device batch, records, values, issues, outbox.
    ``batch``: the request's batch, already written by an earlier wave; ``counted``: the items its
    counts cover (all the request's new items; default ``new``); ``request``: what its lineage keeps."""
    request = request or _Request()
    data = {i: {k: (None if _missing(v) else _plain(v)) for k, v in typed_rows[i].items()} for i in new}
    answers, repeated = _near_duplicates(new, envelopes, priors, by_row, data)
    hh_ids = sorted({str(data[i]["household_id"]) for i in new})
    households = _households(hh_ids)
    missing = [h for h in hh_ids if h not in households]
    if missing:
        first = {data[i]["household_id"]: data[i] for i in reversed(new)}
        Household.objects.bulk_create([Household(household_id=h, district=first[h].get("district") or "",
                                                 village=first[h].get("village") or "") for h in missing],
                                      ignore_conflicts=True)
        households.update(_households(missing))
    officer = user if user.is_authenticated else None
    counted = new if counted is None else counted
    batch = batch or IngestionBatch(
        channel=IngestionBatch.Channel.DEVICE, source=user_agent[:120], format="json", created_by=officer,
        status=IngestionBatch.Status.SUCCEEDED, schema_version=schema.version, finished_at=timezone.now(),
        row_count=len(counted) + rejected, accepted=len(counted), rejected=rejected,
        warnings=sum(1 for i in counted if any(r["severity"] == "warning" for r in by_row.get(i, []))),
        **request.lineage([envelopes[i] for i in counted]))
    # The request's body is kept once, with its batch's first write (later waves reuse the batch).
    body = request.token(batch) if batch._state.adding else None
    records = []
    for k, i in enumerate(new):
        env, d, q = envelopes[i], data[i], quality[i]
        prior = priors.get(env.supersedes) if env.supersedes else None
        records.append(SurveyRecord(
            household=households[str(d["household_id"])], batch=batch, row_number=env.position + 2,
            submission_id=env.submission_id,
            content_hash=hashes[i], version=(prior.version + 1) if prior else 1, supersedes=prior,
            root_id=(prior.root_id or prior.pk) if prior else None,
            district=d.get("district") or "", cluster=d.get("cluster") or "", village=d.get("village") or "",
            household_size=d.get("household_size"), raw=env.data,
            income_per_day=None if _missing(per_day[i]) else float(per_day[i]), progress_status=status[i] or "",
            vulnerable=vulnerable[i], warning_count=sum(1 for r in by_row.get(i, []) if r["severity"] == "warning"),
            collected_at=env.collected_at, form_version=env.form_version, device_id=env.device_id,
            field_officer=officer, gps=env.location, quality_score=q["score"], completeness=q["completeness"],
            validity=q["validity"], consistency=q["consistency"],
            answers_hash=stored_value(answers[k]),
            auto_approved=(auto := q["score"] >= settings.RTV_AUTO_APPROVE_SCORE and not repeated[k]),
            review_status=SurveyRecord.ReviewStatus.APPROVED if auto else SurveyRecord.ReviewStatus.HAS_ISSUES))
    issue_rows = [RowIssue(batch=batch, record=r, row_number=r.row_number, household_id=data[i]["household_id"] or "",
                           field=x["field"], column=x["field"], rule=x["rule"], severity=x["severity"], value=x["value"],
                           message=x["message"])
                  for i, r in zip(new, records, strict=True) for x in by_row.get(i, [])]
    for r in records:  # what the answer needs is in hand: no query per record to build it
        r.issue_list = []
    for x in issue_rows:
        x.record.issue_list.append(x)
    if connection.vendor == "postgresql" and len(new) < COPY_FROM_ROWS:
        values_rows = [SurveyValues(record=r, **{k: data[i].get(k) for k in SURVEY_VALUE_FIELDS})
                       for i, r in zip(new, records, strict=True)]
        outbox_after_commit(_write_few(batch, records, values_rows, issue_rows, body))
        return records
    if batch._state.adding:
        batch.save(force_insert=True)
    if body is not None:
        body.save(force_insert=True)
    insert_returning_keys(SurveyRecord, records)
    # The typed values go in as the file path writes them: by COPY, from the validated frame (Django's
    # bulk_create sends each column as an array that psycopg quotes value by value: ~60 ms per 100).
    if len(new) >= COPY_FROM_ROWS:
        typed = result.typed
        values = typed.iloc[new][[c for c in SURVEY_VALUE_FIELDS if c in typed.columns]].reset_index(drop=True)
        values.insert(0, "record_id", [r.pk for r in records])
        copy_frame(SurveyValues, values, list(values.columns))
    else:  # SQLite (the embedded run), a few rows
        SurveyValues.objects.bulk_create([SurveyValues(record=r, **{k: data[i].get(k) for k in SURVEY_VALUE_FIELDS})
                                          for i, r in zip(new, records, strict=True)])
    insert_returning_keys(RowIssue, issue_rows)
    outbox_enqueue("ingestion.after_submissions", [r.pk for r in records])
    return records


@dataclass(frozen=True)
class _Request:
    """A device request as its batch keeps it, as an upload's batch keeps its file."""

    body: bytes = b""
    validate_s: float = 0.0

    def lineage(self, stored: list[Envelope]) -> dict[str, Any]:
        """The batch's lineage fields: the body's sha256 and size, the fields the stored items sent
        as the header mapping (a device names canonical fields: each maps to itself), and the
        validation time.  The body itself is ``token``'s."""
        fields = sorted({k for e in stored for k in e.data})
        return {"sha256": hashlib.sha256(self.body).hexdigest() if self.body else "", "size_bytes": len(self.body),
                "column_count": len(fields),
                "header_mapping": [{"position": p, "header": f, "field": f} for p, f in enumerate(fields)],
                "timings": {"validate_s": self.validate_s}}

    def token(self, batch: IngestionBatch) -> DeviceRequest | None:
        """The body compressed, then encrypted as the GPS it holds is everywhere else, waiting for
        ``device_bodies_keep``.  Compressed first: a batch of 100 items sent its 340 kB token in 11 ms
        of its insert, and zlib's fastest level takes 0.3 ms to shrink the JSON several times over."""
        if not self.body:
            return None
        return DeviceRequest(batch=batch, token=fernet().encrypt(zlib.compress(self.body, 1)))


def _body_key(batch_id: Any) -> str:
    return area_path("raw", f"{batch_id}/original.json.zlib.fernet")


def device_bodies_keep(record_ids: list[int] | None = None, *, older_than: timedelta | None = None,
                       limit: int = 1000) -> int:
    """Write waiting device requests (of these records' batches; or every one waiting longer than
    ``older_than``: the sweep) under raw/<batch>/original.json.zlib.fernet, name the file on the batch
    and drop the waiting copy; returns how many were kept.

    Each request is locked while it is kept: a second keep of the same batch (the outbox delivers at
    least once) or a key rotation passes over it, never writing a second copy or an old key's token
    over a new one.  A file under the key without a committed batch (a keep that died before its
    commit) is replaced."""
    qs = DeviceRequest.objects.all()
    if record_ids is not None:
        qs = qs.filter(batch_id__in=SurveyRecord.objects.filter(pk__in=record_ids).values("batch_id"))
    if older_than is not None:
        qs = qs.filter(created_at__lt=timezone.now() - older_than)
    with transaction.atomic():
        pending = list(qs.select_for_update(skip_locked=True).order_by("pk")[:limit])
        kept = []
        for request in pending:
            key = _body_key(request.batch_id)
            if default_storage.exists(key):
                default_storage.delete(key)
            kept.append(IngestionBatch(pk=request.batch_id,
                                       file_key=default_storage.save(key, ContentFile(bytes(request.token)))))
        IngestionBatch.objects.bulk_update(kept, ["file_key"])
        DeviceRequest.objects.filter(pk__in=[r.pk for r in pending]).delete()
    return len(pending)


def device_body(batch: IngestionBatch) -> bytes | None:
    """A device batch's request as received, wherever it is kept now; None when it is not kept
    (a request without a body, or a file gone from storage)."""
    waiting = DeviceRequest.objects.filter(batch=batch).values_list("token", flat=True).first()
    if waiting is None:
        if not batch.file_key or not default_storage.exists(batch.file_key):
            return None
        with default_storage.open(batch.file_key, "rb") as fh:
            waiting = fh.read()
    return zlib.decompress(fernet().decrypt(bytes(waiting)))


def device_bodies_rotate(batch_size: int = 500) -> int:
    """Re-encrypt every kept device request with the first key (``manage.py rotate_encryption_keys``):
    those waiting in the database, then those under raw/.  Returns how many were re-encrypted.
    Rows are locked page by page, so a keep waits for (or passes over) what is being rotated."""
    f, total = fernet(), 0
    last: Any = None
    while True:
        with transaction.atomic():
            page = DeviceRequest.objects.order_by("pk").select_for_update()
            waiting = list((page.filter(pk__gt=last) if last else page)[:batch_size])
            for request in waiting:
                request.token = f.rotate(bytes(request.token))
            DeviceRequest.objects.bulk_update(waiting, ["token"])
        if not waiting:
            break
        total, last = total + len(waiting), waiting[-1].pk
    last = None
    while True:
        replaced: list[tuple[str, str]] = []  # (batch id, the old key's file)
        written: list[str] = []
        committing = False
        try:
            with transaction.atomic():
                page = (IngestionBatch.objects.filter(channel=IngestionBatch.Channel.DEVICE).exclude(file_key="")
                        .order_by("pk").select_for_update().only("pk", "file_key"))
                batches = list((page.filter(pk__gt=last) if last else page)[:batch_size])
                for b in batches:
                    if not default_storage.exists(b.file_key):  # gone from storage: nothing to re-encrypt
                        log.warning("kept device request missing from storage", extra={"ingestion_id": str(b.pk)})
                        continue
                    # The new token goes beside the old one (under the batch's own name, or beside it:
                    # names alternate, they do not grow), and the old is deleted only once the batch
                    # names the new: a run that dies part-way loses nothing.
                    with default_storage.open(b.file_key, "rb") as fh:
                        token = f.rotate(fh.read())
                    old, b.file_key = b.file_key, default_storage.save(_body_key(b.pk), ContentFile(token))
                    if old != b.file_key:  # (a storage that overwrites in place wrote nothing beside it)
                        written.append(b.file_key)
                        replaced.append((str(b.pk), old))
                IngestionBatch.objects.bulk_update(batches, ["file_key"])
                if replaced:
                    # Committed with the new names: should this process die before the deletes below,
                    # the outbox still deletes the old key's copies, so a retired key leaves none.
                    outbox_enqueue("ingestion.delete_unnamed_files", replaced)
                committing = True  # from here a failure may be the commit's, whose outcome is unknown
        except BaseException:
            if not committing:  # rolled back for certain: the new copies are named by nothing
                for key in written:
                    default_storage.delete(key)
            else:  # the batches may name them after all: keep them (spare copies under the new key)
                log.warning("rotation page failed at commit; its new copies are kept", extra={"files": written})
            raise
        try:
            unnamed_files_delete(replaced)
        except Exception:  # storage refused: the outbox message deletes them later
            log.warning("old copies not deleted yet; the outbox will", exc_info=True, extra={"files": len(replaced)})
        if not batches:
            return total
        total, last = total + len(batches), batches[-1].pk


def unnamed_files_delete(files: Sequence[Sequence[str]]) -> int:
    """Delete the stored files of ``files`` ((batch id, key) pairs: a rotation's replaced copies)
    that their batch does not name; a key the batch names is kept, whatever the caller thought.
    One query, by the batches' primary keys.  Safe to run twice.  Returns how many were deleted."""
    if not files:
        return 0
    named = set(IngestionBatch.objects.filter(pk__in={batch for batch, _ in files}).values_list("file_key", flat=True))
    gone = [key for _, key in files if key not in named]
    for key in gone:
        default_storage.delete(key)
    return len(gone)


def _near_duplicates(new: list[int], envelopes: list[Envelope], priors: dict[uuid.UUID, SurveyRecord],
                     by_row: dict[int, list[dict[str, Any]]],
                     data: dict[int, dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """The new items' answers hashes, and which repeat the answers of a stored current record (not
    the one an item corrects) or of another new item: those get a ``near_duplicate`` warning and go
    to a reviewer instead of being approved by their score.  One query.

    Also, as a file's rows are: new items of one request (not corrections) that share a household
    id get a ``duplicate_household`` warning (a device back online with the same household twice)."""
    answers = record_answers_hashes([data[i] for i in new])
    repeated = np.zeros(len(new), dtype=bool)
    rules = active_rules()
    rule = rules.get("household_id", "near_duplicate")
    if rule is not None:
        corrected = [priors[s].pk for i in new if (s := envelopes[i].supersedes) is not None and s in priors]
        near = stored_matches(answers, exclude_records=corrected) | within(answers)
        for k in np.flatnonzero(near):
            i = new[k]
            by_row.setdefault(i, []).append({
                "row": i, "field": "household_id", "rule": "near_duplicate", "severity": rule.severity,
                "value": str(data[i].get("household_id") or ""), "message": rule.message})
        repeated |= near
    rule = rules.get("household_id", "duplicate_household")
    if rule is not None and len(new) > 1:
        ids = pd.Series([None if envelopes[i].supersedes is not None else str(data[i].get("household_id") or "").strip()
                         for i in new])
        twice = (ids.notna() & ids.ne("") & ids.duplicated(keep=False)).to_numpy(dtype=bool)
        for k in np.flatnonzero(twice):
            i = new[k]
            by_row.setdefault(i, []).append({
                "row": i, "field": "household_id", "rule": "duplicate_household", "severity": rule.severity,
                "value": str(data[i].get("household_id") or ""),
                "message": "household_id appears more than once in this batch of submissions"})
        repeated |= twice
    return answers, repeated


def _households(ids: list[str]) -> dict[str, Household]:
    """The households with these ids, by id: one plain SELECT (the ORM's compilation of this filter
    cost a device submission more than the query itself)."""
    if not ids:
        return {}
    fields = Household._meta.concrete_fields
    quote = connection.ops.quote_name
    sql = (f"SELECT {', '.join(quote(f.column) for f in fields)} FROM {quote(Household._meta.db_table)} "
           f"WHERE {quote('household_id')} IN ({', '.join(['%s'] * len(ids))})")
    with connection.cursor() as cur:
        cur.execute(sql, ids)
        rows = cur.fetchall()
    names = [f.attname for f in fields]
    return {h.household_id: h for h in (Household.from_db(connection.alias, names, row) for row in rows)}


def _write_few(batch: IngestionBatch, records: list[SurveyRecord], values: list[Any], issues: list[RowIssue],
               body: DeviceRequest | None = None) -> OutboxMessage:
    """A device request's rows (batch, its body, records, values, findings, outbox message) as ONE statement
    of data-modifying CTEs: a submission's write was six round trips and six ORM compilations, a
    third of its time.  Records are referred to by submission id, which every device record has;
    the foreign keys are checked at commit, as for the ORM path.  Sets the new keys on the objects."""
    def record_key(obj: Any) -> Expression:
        return '(SELECT "id" FROM r WHERE "submission_id" = %s)', [obj.record.submission_id]

    message = OutboxMessage(task="ingestion.after_submissions")
    parts = {
        "b": insert_statement(IngestionBatch, [batch]) if batch._state.adding else None,
        "q": insert_statement(DeviceRequest, [body]) if body is not None else None,
        "r": insert_statement(SurveyRecord, records),
        "v": insert_statement(SurveyValues, values, {"record_id": record_key}),
        "i": insert_statement(RowIssue, issues, {"record_id": record_key}) if issues else None,
        "o": insert_statement(OutboxMessage, [message], {
            "args": lambda _: ('(SELECT jsonb_build_array(jsonb_agg("id" ORDER BY "id")) FROM r)', [])}),
    }
    returning = {"r": ' RETURNING "id", "submission_id"', "o": ' RETURNING "id"'}
    ctes, params = [], []
    for name, part in parts.items():
        if part is not None:
            ctes.append(f"{name} AS ({part[0]}{returning.get(name, '')})")
            params.extend(part[1])
    sql = "WITH " + ", ".join(ctes) + ' SELECT r."id", r."submission_id", (SELECT "id" FROM o) FROM r ORDER BY r."id"'
    with server_bound_cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    ids = {sid: pk for pk, sid, _ in rows}
    for record in records:
        record.pk = ids[record.submission_id]
    for obj in [*values, *issues]:
        obj.record_id = obj.record.pk
    message.pk = rows[0][2]
    message.args = [[pk for pk, _, _ in rows]]
    for obj in [batch, *([body] if body is not None else []), *records, *values, *issues, message]:  # saved now
        obj._state.adding, obj._state.db = False, connection.alias
    return message


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
