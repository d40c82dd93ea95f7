"""Shared write paths: audit events, pipeline runs, the contract loader."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.utils import timezone

from . import contract
from .middleware import current_request_id
from .models import AuditEvent, PipelineRun, SchemaField, SchemaVersion

log = logging.getLogger(__name__)


def audit_record(*, actor: AbstractBaseUser | AnonymousUser | None, action: str, obj: Any | None = None,
                 object_type: str = "", object_id: str = "", changes: dict[str, Any] | None = None,
                 system: str = "system") -> AuditEvent:
    """Append one audit event.  Call it inside the transaction that makes the change."""
    user = actor if actor is not None and actor.is_authenticated else None
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = object_id or str(obj.pk)
    return AuditEvent.objects.create(
        actor=user,
        actor_label=user.get_username() if user is not None else system,
        action=action,
        object_type=object_type,
        object_id=object_id,
        changes=changes or {},
        request_id=current_request_id() or "",
    )


def audit_record_many(*, actor: AbstractBaseUser | AnonymousUser | None, action: str, objs: list[Any],
                      changes: list[dict[str, Any]], system: str = "system") -> list[AuditEvent]:
    """One audit event per object, written in a single INSERT (bulk review decisions)."""
    user = actor if actor is not None and actor.is_authenticated else None
    label = user.get_username() if user is not None else system
    rid = current_request_id() or ""
    return AuditEvent.objects.bulk_create([
        AuditEvent(actor=user, actor_label=label, action=action, object_type=o._meta.label_lower, object_id=str(o.pk),
                   changes=c, request_id=rid) for o, c in zip(objs, changes, strict=True)])


@contextmanager
def pipeline_run(job: str, *, user: AbstractBaseUser | AnonymousUser | None = None) -> Iterator[PipelineRun]:
    """Record a job's run: running while the block executes, then succeeded or failed with the error."""
    run = PipelineRun.objects.create(job=job, triggered_by=user if user is not None and user.is_authenticated else None)
    try:
        yield run
    except BaseException as exc:
        run.status = PipelineRun.Status.FAILED
        run.error = f"{type(exc).__name__}: {exc}"[:5000]
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "error", "finished_at", "counts"])
        raise
    run.status = PipelineRun.Status.SUCCEEDED
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "finished_at", "counts"])


ABANDONED_AFTER = timedelta(hours=6)  # longer than any job's time limit (training's is the longest)


def pipeline_runs_abandon(*, older_than: timedelta = ABANDONED_AFTER) -> int:
    """Runs still "running" long after any job could: their process died (killed, out of memory, a
    restart) before it could record an end.  They are marked failed, saying so, instead of running
    for ever on the staff pages."""
    return PipelineRun.objects.filter(status=PipelineRun.Status.RUNNING,
                                      started_at__lt=timezone.now() - older_than).update(
        status=PipelineRun.Status.FAILED, finished_at=timezone.now(),
        error="abandoned: the process running it stopped without recording an end (killed, out of memory, restarted)")


def spec_to_row(spec: contract.FieldSpec) -> dict[str, Any]:
    aliases = sorted({a for a in (spec.header, *spec.aliases) if a and a != spec.name})
    return {
        "name": spec.name,
        "source_header": spec.header or "",
        "source_position": spec.position,
        "aliases": aliases,
        "type": spec.type,
        "unit": spec.unit,
        "required": spec.required,
        "allowed": list(spec.allowed),
        "min_value": spec.min,
        "max_value": spec.max,
        "warn_max": spec.warn_max,
        "sentinels": list(spec.sentinels),
        "lenient": spec.lenient,
        "pattern": spec.pattern or "",
        "role": spec.role,
        "pii": spec.pii,
        "description": spec.description,
    }


def contract_load(*, version: str = contract.CONTRACT_VERSION, fields: tuple[contract.FieldSpec, ...] = contract.ALL_FIELDS,
                  make_current: bool = True, schema_version_model: Any = SchemaVersion,
                  schema_field_model: Any = SchemaField) -> Any:
    """Load a contract version into the schema tables (idempotent).  Models are parameters so that
    the data migration can pass its historical models."""
    with transaction.atomic():
        sv, created = schema_version_model.objects.get_or_create(version=version)
        if created:
            schema_field_model.objects.bulk_create([schema_field_model(schema=sv, **spec_to_row(f)) for f in fields])
        if make_current and not sv.is_current:
            schema_version_model.objects.filter(is_current=True).update(is_current=False)
            sv.is_current = True
            sv.save(update_fields=["is_current"])
    return sv
