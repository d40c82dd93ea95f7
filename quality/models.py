"""Validation rules as data, their history, quality snapshots and alerts, and review."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q


class Rule(models.Model):
    """One check, editable in the admin.  Compiled into vectorised masks by ``quality.rules``."""

    class Level(models.TextChoices):
        STRUCTURAL = "structural"
        SEMANTIC = "semantic"
        BUSINESS = "business"
        STATISTICAL = "statistical"

    class Severity(models.TextChoices):
        ERROR = "error", "error (the record is rejected)"
        WARNING = "warning", "warning (kept and flagged)"

    class Kind(models.TextChoices):
        REQUIRED = "required"
        TYPE = "type"
        RANGE = "range"
        ALLOWED = "allowed"
        UNKNOWN_VALUE = "unknown_value"
        PATTERN = "pattern"
        SENTINEL = "sentinel"
        OUTLIER = "outlier"
        SUM_IDENTITY = "sum_identity"
        PER_DAY_IDENTITY = "per_day_identity"
        CURRENCY_IDENTITY = "currency_identity"
        GPS_IN_UGANDA = "gps_in_uganda"
        NOT_IN_FUTURE = "not_in_future"
        ROBUST_Z = "robust_z"
        FREQUENCY_SHIFT = "frequency_shift"
        DUPLICATE_HOUSEHOLD = "duplicate_household"
        NEAR_DUPLICATE = "near_duplicate"

    code = models.CharField(max_length=120, unique=True, help_text="kind.field, e.g. range.household_size")
    level = models.CharField(max_length=16, choices=Level.choices)
    kind = models.CharField(max_length=24, choices=Kind.choices)
    field = models.CharField(max_length=80, blank=True, help_text="the field the finding is reported on")
    severity = models.CharField(max_length=8, choices=Severity.choices)
    params = models.JSONField(default=dict, blank=True)
    message = models.CharField(max_length=300)
    active = models.BooleanField(default=True)
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["level", "field", "kind"]
        constraints = [
            models.CheckConstraint(condition=~Q(kind="type") | Q(level="structural"), name="type_rules_are_structural"),
            # A likely duplicate goes to a reviewer, never rejected: it may be a re-survey (domain.md).
            models.CheckConstraint(condition=~Q(kind__in=["duplicate_household", "near_duplicate"]) | Q(severity="warning"),
                                   name="duplicate_rules_are_warnings",
                                   violation_error_message="A duplicate rule is a warning: a likely duplicate is "
                                                           "reviewed, never rejected."),
        ]

    def __str__(self) -> str:
        return self.code

    def clean(self) -> None:
        """The rule must run as saved (``quality.rules.rule_check``): the admin form and
        ``rule_update`` both refuse parameters that would break the validator."""
        from .rules import RuleProblem, rule_check

        try:
            rule_check(self)
        except RuleProblem as exc:
            raise ValidationError({exc.attribute: str(exc)}) from exc


class RuleRevision(models.Model):
    """Each saved version of a rule: what it was, who changed it, when."""

    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="revisions")
    version = models.PositiveIntegerField()
    snapshot = models.JSONField()
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    changed_at = models.DateTimeField(auto_now_add=True)
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["rule", "-version"]
        constraints = [models.UniqueConstraint(fields=["rule", "version"], name="rule_revision_unique")]

    def __str__(self) -> str:
        return f"{self.rule.code} v{self.version}"


class QualitySnapshot(models.Model):
    """The daily re-validation of recent data with the current rules."""

    day = models.DateField(unique=True)
    records = models.PositiveIntegerField()
    errors = models.PositiveIntegerField()
    warnings = models.PositiveIntegerField()
    mean_score = models.FloatField(null=True)
    completeness = models.FloatField(null=True)
    validity = models.FloatField(null=True)
    consistency = models.FloatField(null=True)
    by_rule = models.JSONField(default=dict)
    by_district = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-day"]

    def __str__(self) -> str:
        return f"{self.day}: {self.mean_score}"


class QualityAlert(models.Model):
    """A quality drop beyond the configured threshold (rtv.alerts delivers it)."""

    snapshot = models.ForeignKey(QualitySnapshot, on_delete=models.CASCADE, related_name="alerts")
    metric = models.CharField(max_length=40)
    previous = models.FloatField()
    current = models.FloatField()
    threshold = models.FloatField()
    message = models.TextField()
    delivered_at = models.DateTimeField(null=True, blank=True, help_text="when every configured channel had it")
    delivered_to = models.JSONField(default=dict, blank=True,
                                    help_text="channel -> when it took the alert (rtv.alerts); or why it was not sent")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.message


class ReviewComment(models.Model):
    record = models.ForeignKey("ingestion.SurveyRecord", on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.text[:60]


class ReviewDecision(models.Model):
    """Every review state change: who, when, from, to, why."""

    record = models.ForeignKey("ingestion.SurveyRecord", on_delete=models.CASCADE, related_name="decisions")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    from_status = models.CharField(max_length=16)
    to_status = models.CharField(max_length=16)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.record_id}: {self.from_status} -> {self.to_status}"
