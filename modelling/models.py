"""Model versions (mirroring the MLflow registry, with their evaluation) and predictions."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class ModelVersion(models.Model):
    name = models.CharField(max_length=120)
    version = models.PositiveIntegerField()
    mlflow_run_id = models.CharField(max_length=64)
    model_uri = models.CharField(max_length=400)
    algorithm = models.CharField(max_length=80)
    features = models.JSONField(default=list, help_text="contract fields the model reads")
    metrics = models.JSONField(default=dict)
    training_rows = models.IntegerField(default=0)
    training_cutoff = models.DateTimeField(null=True, blank=True, help_text="newest record used for training")
    snapshot = models.ForeignKey("features.FeatureSnapshot", null=True, blank=True, on_delete=models.PROTECT,
                                 help_text="the processed rows it was trained on")
    aliases = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["name", "version"], name="model_version_unique")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class Prediction(models.Model):
    record = models.ForeignKey("ingestion.SurveyRecord", on_delete=models.CASCADE, related_name="predictions")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="predictions")
    probability_vulnerable = models.FloatField()
    predicted_vulnerable = models.BooleanField()
    variant = models.CharField(max_length=16, default="champion")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(probability_vulnerable__gte=0) & Q(probability_vulnerable__lte=1),
                                   name="prediction_probability_range"),
        ]
        indexes = [models.Index(fields=["record", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.record_id}: {self.probability_vulnerable:.2f}"


class ModelEvent(models.Model):
    """A promotion or rollback of the champion: which versions, who, and the gate's evidence."""

    class Action(models.TextChoices):
        PROMOTE = "promote"
        ROLLBACK = "rollback"

    name = models.CharField(max_length=120)
    action = models.CharField(max_length=16, choices=Action.choices)
    from_version = models.PositiveIntegerField(null=True, blank=True)
    to_version = models.PositiveIntegerField()
    gate = models.JSONField(default=dict, blank=True)
    forced = models.BooleanField(default=False)
    actor = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.name} {self.from_version} -> {self.to_version}"


class RetrainDecision(models.Model):
    """One evaluation of the retraining triggers, with what it looked at and what it decided."""

    class Trigger(models.TextChoices):
        NEW_SAMPLES = "new_samples"
        DEGRADATION = "degradation"
        DRIFT = "drift"
        SCHEDULE = "schedule"
        MANUAL = "manual"

    evaluated_at = models.DateTimeField(auto_now_add=True, db_index=True)
    champion_version = models.PositiveIntegerField(null=True, blank=True)
    fired = models.JSONField(default=list, help_text="the triggers that fired")
    inputs = models.JSONField(default=dict, help_text="what each trigger measured")
    retrain_queued = models.BooleanField(default=False)

    class Meta:
        ordering = ["-evaluated_at"]

    def __str__(self) -> str:
        return f"{self.evaluated_at:%Y-%m-%d %H:%M}: {', '.join(self.fired) or 'no trigger'}"
