"""Model versions (mirroring the MLflow registry, with their evaluation) and predictions."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


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


class Experiment(models.Model):
    """An A/B or shadow rollout of a challenger against the champion.

    Assignment is sticky: ``sha256("<name>:<household_id>") mod 10000`` against the traffic share,
    so raising a ramp from 10% to 20% sends no household back.  In shadow mode both models score
    every household and the answer is the champion's."""

    name = models.SlugField(max_length=80, unique=True, help_text="part of the assignment hash: never rename a running experiment")
    champion = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    challenger = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    traffic_share = models.FloatField(default=0.1, help_text="share of households (0-1) answered by the challenger")
    shadow = models.BooleanField(default=False, help_text="score both; always answer with the champion")
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL)
    started_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(fields=["active"], condition=Q(active=True), name="one_active_experiment"),
            models.CheckConstraint(condition=Q(traffic_share__gte=0) & Q(traffic_share__lte=1),
                                   name="experiment_share_range"),
            models.CheckConstraint(condition=~Q(champion=models.F("challenger")), name="experiment_two_models"),
        ]

    def __str__(self) -> str:
        mode = "shadow" if self.shadow else f"{self.traffic_share:.0%} A/B"
        return f"{self.name} ({mode})"


class Prediction(models.Model):
    """One model's answer for one household: probabilities, confidence, reasons, and who said it."""

    class Variant(models.TextChoices):
        CHAMPION = "champion"
        CHALLENGER = "challenger"
        SHADOW = "shadow"  # scored but not answered

    class Source(models.TextChoices):
        BATCH = "batch"
        API = "api"
        SUBMISSION = "submission"

    # Few indexes: the batch job COPYs tens of thousands of rows a run, and each index costs it.
    # (record, -created_at), (model_version, record) and (experiment, variant) cover the lookups; the
    # last holds only experiments' rows, so a champion's batch (no experiment) does not write it.
    # No database foreign key on record and model_version: PostgreSQL checks one with a trigger call
    # per inserted row, and for a batch's 100,000 rows the two cost 1.3-1.5 s, as long as the COPY
    # itself.  predictions_write, the one write path, checks and locks a chunk's records and model
    # versions in one statement each instead (rtv.bulk.references_lock: the same FOR KEY SHARE lock),
    # so a prediction never names a missing row; deleting a record still deletes its predictions and
    # a model version with predictions still cannot be deleted (Django's on_delete, as before).
    record = models.ForeignKey("ingestion.SurveyRecord", null=True, blank=True, on_delete=models.CASCADE,
                               related_name="predictions", db_index=False, db_constraint=False)
    household_id = models.CharField(max_length=64, blank=True)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="predictions",
                                      db_index=False, db_constraint=False)
    probability_vulnerable = models.FloatField()
    predicted_vulnerable = models.BooleanField()
    predicted_status = models.CharField(max_length=32, blank=True)
    status_probabilities = models.JSONField(default=dict, blank=True)
    margin = models.FloatField(null=True, blank=True, help_text="distance of the probability from the decision threshold")
    borderline = models.BooleanField(default=False)
    prediction_set = models.JSONField(default=list, blank=True, help_text="conformal set of statuses")
    reasons = models.JSONField(default=list, blank=True)
    variant = models.CharField(max_length=16, choices=Variant.choices, default=Variant.CHAMPION)
    experiment = models.ForeignKey(Experiment, null=True, blank=True, on_delete=models.PROTECT, related_name="predictions",
                                   db_index=False)
    bucket = models.IntegerField(null=True, blank=True, help_text="0-9999: the household's place in the experiment")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.BATCH)
    payload = models.JSONField(null=True, blank=True, help_text="the scored data, for API requests asked to be stored")
    requested_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                     db_index=False)
    # A default, not auto_now_add: a batch is stamped once, and the answer shows the stored time.
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(probability_vulnerable__gte=0) & Q(probability_vulnerable__lte=1),
                                   name="prediction_probability_range"),
            models.CheckConstraint(condition=Q(bucket__isnull=True) | (Q(bucket__gte=0) & Q(bucket__lt=10000)),
                                   name="prediction_bucket_range"),
        ]
        indexes = [models.Index(fields=["record", "-created_at"]),
                   models.Index(fields=["model_version", "record"]),
                   models.Index(fields=["experiment", "variant"], condition=Q(experiment__isnull=False),
                                name="prediction_experiment_set")]

    def __str__(self) -> str:
        return f"{self.record_id or self.household_id}: {self.probability_vulnerable:.2f}"


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


class MonitoringRun(models.Model):
    """One run of the daily model-performance job: drift of the inputs and of the predicted mix
    against the champion's training snapshot, overall and by district, and performance on records
    labelled since training."""

    ran_at = models.DateTimeField(auto_now_add=True, db_index=True)
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL)
    window_start = models.DateTimeField(null=True, blank=True)
    rows = models.IntegerField(default=0)
    feature_psi_max = models.FloatField(null=True, blank=True)
    prediction_psi = models.FloatField(null=True, blank=True)
    roc_auc = models.FloatField(null=True, blank=True, help_text="on newly labelled records")
    results = models.JSONField(default=dict)
    drift = models.BooleanField(default=False)

    class Meta:
        ordering = ["-ran_at"]

    def __str__(self) -> str:
        return f"{self.ran_at:%Y-%m-%d}: v{self.model_version.version if self.model_version else '-'}"


class ModelAlert(models.Model):
    """A monitored figure beyond its threshold (rtv.alerts delivers it)."""

    run = models.ForeignKey(MonitoringRun, on_delete=models.CASCADE, related_name="alerts")
    metric = models.CharField(max_length=80)
    scope = models.CharField(max_length=120, default="overall")
    value = models.FloatField()
    threshold = models.FloatField()
    message = models.TextField()
    delivered_at = models.DateTimeField(null=True, blank=True, help_text="when every configured channel had it")
    delivered_to = models.JSONField(default=dict, blank=True,
                                    help_text="channel -> when it took the alert (rtv.alerts); or why it was not sent")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.message
