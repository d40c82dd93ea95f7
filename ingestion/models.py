"""Households, ingestion batches, survey records and the issues found in each row."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from rtv import contract
from rtv.fields import EncryptedJSONField


class Household(models.Model):
    """One household, by the id RTV gives it.  Records (one per survey round) point here."""

    household_id = models.CharField(max_length=64, unique=True)
    district = models.CharField(max_length=64, blank=True, db_index=True)
    village = models.CharField(max_length=120, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.household_id


class IngestionBatch(models.Model):
    """One arrival of data through any door, with its lineage and outcome."""

    class Channel(models.TextChoices):
        DEVICE = "device"
        UPLOAD = "upload"
        PARTNER = "partner"
        COMMAND = "command"

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    source = models.CharField(max_length=120, blank=True)
    format = models.CharField(max_length=16, blank=True)
    original_name = models.CharField(max_length=255, blank=True)
    file_key = models.CharField(max_length=400, blank=True, help_text="the original file under raw/ in storage")
    sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    size_bytes = models.BigIntegerField(default=0)
    row_count = models.IntegerField(default=0)
    column_count = models.IntegerField(default=0)
    header_mapping = models.JSONField(default=list, blank=True)
    schema_version = models.ForeignKey("rtv.SchemaVersion", on_delete=models.PROTECT, null=True)
    dry_run = models.BooleanField(default=False)
    forced = models.BooleanField(default=False, help_text="ingested although the same file was ingested before")
    duplicate_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    partner = models.ForeignKey("ingestion.Partner", null=True, blank=True, on_delete=models.PROTECT,
                                related_name="batches")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    accepted = models.IntegerField(default=0)
    warnings = models.IntegerField(default=0, help_text="accepted rows that carry at least one warning")
    rejected = models.IntegerField(default=0)
    duplicates = models.IntegerField(default=0)
    label_counts = models.JSONField(default=dict, blank=True)
    quality = models.JSONField(default=dict, blank=True, help_text="the batch quality report")
    timings = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    plan_lease_until = models.DateTimeField(null=True, blank=True, help_text="a batch still being split into chunks "
                                            "after this time lost its worker: the sweep plans it again")
    plan_attempts = models.PositiveSmallIntegerField(default=0, help_text="planners started on this batch")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "ingestion batches"
        constraints = [
            models.CheckConstraint(condition=Q(accepted__gte=0) & Q(rejected__gte=0), name="batch_counts_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.channel}:{self.original_name or self.id}"


class DeviceRequest(models.Model):
    """A device request's body as received, compressed (zlib) and encrypted (Fernet), until a worker
    keeps it under raw/ (``ingestion.submissions.device_bodies_keep``).  A table of its own, so the
    batch rows that every list and page reads never carry it."""

    batch = models.OneToOneField(IngestionBatch, primary_key=True, on_delete=models.CASCADE,
                                 related_name="pending_request")
    token = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"request of batch {self.batch_id}"


class Partner(models.Model):
    """A partner organisation that sends survey files: through the API with its own accounts, or by
    dropping files into its inbox prefix in storage (picked up by a scheduled job)."""

    name = models.CharField(max_length=120, unique=True)
    slug = models.SlugField(max_length=60, unique=True, help_text="inbox prefix: inbox/<slug>/")
    users = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="partners")
    active = models.BooleanField(default=True)
    contact_email = models.EmailField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    @property
    def inbox_prefix(self) -> str:
        return f"inbox/{self.slug}/"


class IngestionChunk(models.Model):
    """A slice of a batch's rows that any worker can take.  Claimed by a conditional update with a
    lease; its records, issues and ``done`` status commit in one transaction, so a worker killed
    halfway leaves nothing behind and the chunk is simply taken again."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"  # failed RTV_CHUNK_MAX_ATTEMPTS times: its rows are not stored, its batch says why

    batch = models.ForeignKey(IngestionBatch, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    start_row = models.PositiveIntegerField(help_text="0-based offset of the chunk's first data row")
    row_count = models.PositiveIntegerField()
    file_key = models.CharField(max_length=400)
    flag_rows = models.JSONField(default=dict, help_text="file-wide findings by rule kind: local row offsets "
                                                        "(duplicate_household, near_duplicate)")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    accepted = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    warnings = models.PositiveIntegerField(default=0)
    label_counts = models.JSONField(default=dict)
    summary = models.JSONField(default=dict, help_text="for the batch quality report: score sums of the accepted "
                                                        "rows and counts by district (dry runs too)")
    seconds = models.FloatField(default=0)
    error = models.TextField(blank=True, help_text="the last failure of an attempt at this chunk")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["batch", "index"]
        constraints = [models.UniqueConstraint(fields=["batch", "index"], name="chunk_unique_index")]

    def __str__(self) -> str:
        return f"{self.batch_id}#{self.index}"


class ProgressStatus(models.TextChoices):
    ON_TRACK = "On Track"
    AT_RISK = "At Risk"
    STRUGGLING = "Struggling"
    SEVERELY_STRUGGLING = "Severely Struggling"


class SurveyRecord(models.Model):
    """One household's answers for one survey round, one version.  Never overwritten: an edit is a
    new version that names the one it supersedes."""

    class ReviewStatus(models.TextChoices):
        RECEIVED = "received"
        HAS_ISSUES = "has_issues"
        ON_HOLD = "on_hold"
        APPROVED = "approved"
        REJECTED = "rejected"

    # Index choices matter here: each index costs every bulk insert (COPY) a write.  Nullable links
    # are indexed only where set; the (household, survey_round) and (batch, row_number) indexes
    # cover their foreign keys.
    household = models.ForeignKey(Household, on_delete=models.PROTECT, related_name="records", db_index=False)
    batch = models.ForeignKey(IngestionBatch, on_delete=models.PROTECT, related_name="records", db_index=False)
    row_number = models.IntegerField(null=True, blank=True, help_text="spreadsheet row in the source file")
    survey_round = models.CharField(max_length=40, blank=True)
    version = models.PositiveIntegerField(default=1)
    supersedes = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="superseded_by",
                                   db_index=False)
    root = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False,
                             help_text="the first version of this record's history (null on the first version)")
    submission_id = models.UUIDField(null=True, blank=True)
    content_hash = models.CharField(max_length=64)
    answers_hash = models.BigIntegerField(
        null=True, blank=True, editable=False,
        help_text="hash of the survey answers (quality.duplicates): finds likely duplicates across sources")
    # No index on district (four values: a filter on one reads a quarter of the table, which a scan
    # does as well) and a plain one on village: db_index=True would add a LIKE-pattern copy of each,
    # which no query uses and every stored row pays for (about 0.3 s per 100k rows stored).
    district = models.CharField(max_length=64)
    cluster = models.CharField(max_length=120, blank=True)
    village = models.CharField(max_length=120)
    household_size = models.IntegerField(null=True, blank=True)
    raw = models.JSONField(null=True, blank=True,
                           help_text="a device payload exactly as received (file rows: the original file under raw/)")
    income_per_day = models.FloatField(null=True, blank=True, help_text="HHIncome+Consumption+Residues/Day, USD")
    progress_status = models.CharField(max_length=24, choices=ProgressStatus.choices, blank=True)
    vulnerable = models.BooleanField(null=True, blank=True)
    review_status = models.CharField(max_length=16, choices=ReviewStatus.choices, default=ReviewStatus.RECEIVED)
    warning_count = models.PositiveIntegerField(default=0)
    auto_approved = models.BooleanField(default=False, help_text="approved by score, not by a reviewer")
    quality_score = models.FloatField(null=True, blank=True, db_index=True)
    completeness = models.FloatField(null=True, blank=True)
    validity = models.FloatField(null=True, blank=True)
    consistency = models.FloatField(null=True, blank=True)
    collected_at = models.DateTimeField(null=True, blank=True)
    form_version = models.CharField(max_length=40, blank=True)
    device_id = models.CharField(max_length=120, blank=True)
    field_officer = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="+", db_index=False)
    gps = EncryptedJSONField(null=True, blank=True, help_text="{lat, lon, accuracy_m}, encrypted at rest")
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["submission_id"], condition=Q(submission_id__isnull=False),
                                    name="record_unique_submission"),
            models.UniqueConstraint(fields=["supersedes"], condition=Q(supersedes__isnull=False),
                                    name="record_superseded_once"),
            models.CheckConstraint(condition=Q(version__gte=1), name="record_version_positive"),
            models.CheckConstraint(condition=Q(household_size__isnull=True) | Q(household_size__gte=1),
                                   name="record_household_size_positive"),
        ]
        indexes = [
            models.Index(fields=["household", "survey_round"]),
            models.Index(fields=["batch", "row_number"]),
            models.Index(fields=["root"], condition=Q(root__isnull=False), name="record_root_set"),
            models.Index(fields=["field_officer"], condition=Q(field_officer__isnull=False), name="record_officer_set"),
            models.Index(fields=["answers_hash"], condition=Q(answers_hash__isnull=False), name="record_answers_set"),
            models.Index(fields=["village"], name="record_village"),
        ]

    def __str__(self) -> str:
        return f"{self.household_id} v{self.version}"

    @property
    def data(self) -> dict[str, Any]:
        """The record's typed survey values by canonical name (one query unless prefetched)."""
        return self.values.as_dict()


def _value_field(spec: contract.FieldSpec) -> models.Field:  # type: ignore[type-arg]
    if spec.type in ("text", "multiselect", "uuid", "datetime"):
        return models.TextField(null=True, blank=True, help_text=spec.description)
    return models.FloatField(null=True, blank=True, help_text=f"{spec.description} ({spec.unit})")


class _SurveyValuesBase(models.Model):
    class Meta:
        abstract = True

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in SURVEY_VALUE_FIELDS:
            v = getattr(self, name)
            out[name] = int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 2**53 else v
        return out


SURVEY_VALUE_FIELDS: tuple[str, ...] = tuple(f.name for f in contract.SURVEY_FIELDS)


# One typed column per contract field.  A wide typed table, not a JSON document: COPY of 75
# JSONB keys ran at ~7k rows/s here against ~64k rows/s for typed columns, and feature building
# reads columns, not documents.  A new contract version adds its columns by migration.
SurveyValues: type[_SurveyValuesBase] = type("SurveyValues", (_SurveyValuesBase,), {
    "__module__": __name__,
    "__doc__": "The typed survey values of one record, one column per contract field.",
    "record": models.OneToOneField(SurveyRecord, primary_key=True, on_delete=models.CASCADE, related_name="values"),
    **{f.name: _value_field(f) for f in contract.SURVEY_FIELDS},
    "Meta": type("Meta", (), {"verbose_name_plural": "survey values"}),
    "__str__": lambda self: f"values of record {self.pk}",
})


class RowIssue(models.Model):
    """A finding on one row of a batch: the row may have been stored (warning) or rejected (error)."""

    class Severity(models.TextChoices):
        ERROR = "error"
        WARNING = "warning"

    batch = models.ForeignKey(IngestionBatch, on_delete=models.CASCADE, related_name="issues", db_index=False)
    record = models.ForeignKey(SurveyRecord, null=True, blank=True, on_delete=models.CASCADE, related_name="issues",
                               db_index=False)
    row_number = models.IntegerField(help_text="spreadsheet row: the header is row 1")
    household_id = models.CharField(max_length=64, blank=True)
    field = models.CharField(max_length=80, blank=True)
    column = models.CharField(max_length=120, blank=True)
    rule = models.CharField(max_length=60)
    severity = models.CharField(max_length=8, choices=Severity.choices)
    value = models.TextField(blank=True)
    message = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["batch", "row_number"]), models.Index(fields=["batch", "rule"]),
                   models.Index(fields=["record"], condition=Q(record__isnull=False), name="issue_record_set")]
        ordering = ["batch", "row_number", "id"]

    def __str__(self) -> str:
        return f"row {self.row_number} {self.field} {self.rule}"


# Survey text that is also kept in a bounded column (households, records, predictions, findings):
# a longer value is refused as invalid input, not left to fail the insert.
STORED_TEXT_LIMITS: dict[str, int] = {
    "household_id": min(Household._meta.get_field("household_id").max_length or 64,  # type: ignore[union-attr]
                        RowIssue._meta.get_field("household_id").max_length or 64),  # type: ignore[union-attr]
    "district": SurveyRecord._meta.get_field("district").max_length or 64,  # type: ignore[union-attr]
    "cluster": SurveyRecord._meta.get_field("cluster").max_length or 120,  # type: ignore[union-attr]
    "village": SurveyRecord._meta.get_field("village").max_length or 120,  # type: ignore[union-attr]
}
