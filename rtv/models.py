"""What every app shares: the survey data contract (as data), audit events and pipeline runs."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class SchemaVersion(models.Model):
    """One version of the survey data contract.  Exactly one is current."""

    version = models.CharField(max_length=40, unique=True)
    description = models.TextField(blank=True)
    is_current = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["is_current"], condition=Q(is_current=True), name="one_current_schema"),
        ]

    def __str__(self) -> str:
        return self.version


class FieldType(models.TextChoices):
    TEXT = "text"
    INTEGER = "integer"
    DECIMAL = "decimal"
    CODE = "code"
    MULTISELECT = "multiselect"
    UUID = "uuid"
    DATETIME = "datetime"
    BOOLEAN = "boolean"


class FieldRole(models.TextChoices):
    IDENTIFIER = "identifier"
    LOCATION = "location"
    FEATURE = "feature"
    MONEY = "money"
    DERIVED = "derived"
    LABEL = "label"
    METADATA = "metadata"


class PiiClass(models.TextChoices):
    NONE = "none"
    PSEUDONYMOUS = "pseudonymous"
    QUASI = "quasi", "quasi-identifier"
    DIRECT = "direct"
    LOCATION = "location"


class SchemaField(models.Model):
    schema = models.ForeignKey(SchemaVersion, on_delete=models.CASCADE, related_name="fields")
    name = models.CharField(max_length=80)
    source_header = models.CharField(max_length=120, blank=True)
    source_position = models.PositiveSmallIntegerField(null=True, blank=True)
    aliases = models.JSONField(default=list, blank=True)
    type = models.CharField(max_length=16, choices=FieldType.choices)
    unit = models.CharField(max_length=32, blank=True)
    required = models.BooleanField(default=False)
    allowed = models.JSONField(default=list, blank=True)
    min_value = models.FloatField(null=True, blank=True)
    max_value = models.FloatField(null=True, blank=True)
    warn_max = models.FloatField(null=True, blank=True)
    sentinels = models.JSONField(default=list, blank=True)
    lenient = models.BooleanField(default=False)
    pattern = models.CharField(max_length=200, blank=True)
    role = models.CharField(max_length=16, choices=FieldRole.choices)
    pii = models.CharField(max_length=16, choices=PiiClass.choices, default=PiiClass.NONE)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["schema", "source_position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["schema", "name"], name="schema_field_unique_name"),
            models.UniqueConstraint(fields=["schema", "source_position"], name="schema_field_unique_position"),
            models.CheckConstraint(
                condition=Q(min_value__isnull=True) | Q(max_value__isnull=True) | Q(min_value__lte=models.F("max_value")),
                name="schema_field_min_le_max",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class AuditEvent(models.Model):
    """Who did what to which object, when, from which request.  Append-only."""

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_label = models.CharField(max_length=150, blank=True, help_text="username, or the system job")
    action = models.CharField(max_length=80)
    object_type = models.CharField(max_length=80)
    object_id = models.CharField(max_length=64)
    changes = models.JSONField(default=dict, blank=True, help_text="{field: [old, new]}")
    request_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["object_type", "object_id"])]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.actor_label} {self.action} {self.object_type}:{self.object_id}"


class PipelineRun(models.Model):
    """One run of a job (ingestion, training, scoring...), with its counts and outcome."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    job = models.CharField(max_length=80, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    correlation_id = models.UUIDField(default=uuid.uuid4, db_index=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    triggered_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status="running") | Q(finished_at__isnull=False), name="pipeline_run_finished_when_done"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job} {self.status}"


class OutboxMessage(models.Model):
    """A task to enqueue once the transaction that wrote it has committed.

    Written in the same transaction as the data it is about, so a crash or a broker outage can
    delay downstream work but never lose it: the sweeper sends whatever is still unsent.
    """

    task = models.CharField(max_length=120)
    args = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["created_at"], condition=Q(sent_at__isnull=True), name="outbox_unsent")]

    def __str__(self) -> str:
        return f"{self.task}{self.args}"
