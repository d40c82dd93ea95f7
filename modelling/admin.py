import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from rtv.admin import ReadOnlyAdmin, RoleAdmin
from rtv.roles import ADMIN, DATA_SCIENTIST, STAFF_ROLES, has_role

from . import serving
from .experiments import ExperimentNameTaken, experiment_change, experiment_end, experiment_report, experiment_start
from .models import Experiment, ModelAlert, ModelEvent, ModelVersion, MonitoringRun, Prediction, RetrainDecision
from .promotion import PromotionRefused, model_promote, model_rollback
from .triggers import retrain_requested


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ("name", "version", "algorithm", "aliases", "training_rows", "created_at")
    actions = ["promote", "rollback", "retrain"]

    @admin.action(description="Train a new version now (queued; the selection is ignored)", permissions=["change"])
    def retrain(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        retrain_requested(user=request.user, door="admin")
        self.message_user(request, "Training queued; the new version appears here as challenger.", messages.SUCCESS)

    @admin.action(description="Promote to champion (if it passes the gate)", permissions=["change"])
    def promote(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to promote.", messages.ERROR)
            return
        try:
            mv = model_promote(version=queryset.get().version, user=request.user)
        except PromotionRefused as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, f"v{mv.version} is the champion.", messages.SUCCESS)

    @admin.action(description="Roll the champion back to the previous one (the selection is ignored)",
                  permissions=["change"])
    def rollback(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        try:  # the service the API and rollback_model use: one write path, one audit
            mv = model_rollback(user=request.user)
        except PromotionRefused as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, f"v{mv.version} is the champion again.", messages.SUCCESS)

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """The actions (promote, roll back, retrain) for data scientists and admins; a version itself
        is never edited here: its metrics are what training measured, and its aliases move only
        through the services that move MLflow's and audit it (the change form is a read-only view)."""
        return obj is None and has_role(request.user, DATA_SCIENTIST, ADMIN)

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return has_role(request.user, *STAFF_ROLES)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, *STAFF_ROLES)


@admin.register(ModelEvent)
class ModelEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "name", "action", "from_version", "to_version", "forced", "actor")


@admin.register(Prediction)
class PredictionAdmin(ReadOnlyAdmin):
    list_display = ("record", "household_id", "model_version", "probability_vulnerable", "predicted_status", "borderline",
                    "variant", "experiment", "bucket", "source", "created_at")
    list_filter = ("variant", "source", "borderline", "predicted_status")
    list_select_related = ("record", "model_version", "experiment")


@admin.register(RetrainDecision)
class RetrainDecisionAdmin(ReadOnlyAdmin):
    list_display = ("evaluated_at", "champion_version", "fired", "retrain_queued")


class ExperimentForm(forms.ModelForm):
    """A new experiment runs against the current champion: said in the form when there is none, or
    when the challenger chosen is the champion itself (the service would refuse it: a 500 here)."""

    class Meta:
        model = Experiment
        fields = ("name", "challenger", "traffic_share", "shadow")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.instance.pk is None:
            champion = serving.champion(fresh=True)
            if champion is None:
                raise forms.ValidationError("There is no champion yet: an experiment compares a challenger with one.")
            challenger = cleaned.get("challenger")
            if challenger is not None and challenger.pk == champion.pk:
                raise forms.ValidationError(f"Version {champion.version} is the champion: choose another challenger.")
        return cleaned


@admin.register(Experiment)
class ExperimentAdmin(RoleAdmin):
    """Start (against the current champion), ramp and end A/B or shadow experiments."""

    see = edit = add = (DATA_SCIENTIST, ADMIN)  # never deleted: predictions name their experiment
    form = ExperimentForm

    list_display = ("name", "champion", "challenger", "traffic_share", "shadow", "active", "started_at", "ended_at")
    list_filter = ("active", "shadow")
    actions = ["end"]

    def get_fields(self, request: HttpRequest, obj: Experiment | None = None) -> Any:
        if obj is None:
            return ("name", "challenger", "traffic_share", "shadow")
        return ("name", "champion", "challenger", "traffic_share", "shadow", "active", "started_at", "ended_at", "report")

    def get_readonly_fields(self, request: HttpRequest, obj: Experiment | None = None) -> Any:
        if obj is None:
            return ()
        if not obj.active:  # an ended experiment is a record of what ran: its report depends on it
            return ("name", "champion", "challenger", "traffic_share", "shadow", "active", "started_at", "ended_at",
                    "report")
        return ("name", "champion", "challenger", "active", "started_at", "ended_at", "report")

    @admin.display(description="Comparison report")
    def report(self, obj: Experiment) -> str:
        return format_html("<pre>{}</pre>", json.dumps(experiment_report(obj), indent=2, default=str))

    def save_model(self, request: HttpRequest, obj: Experiment, form: Any, change: bool) -> None:
        if not change:
            try:
                started = experiment_start(name=obj.name, challenger=obj.challenger, traffic_share=obj.traffic_share,
                                           shadow=obj.shadow, user=request.user)
            except ExperimentNameTaken:  # the form posted twice (the form's own check ran before the first saved)
                started = Experiment.objects.get(name=obj.name)
                messages.warning(request, f"An experiment named {obj.name!r} was started a moment ago; "
                                          "it was not started again.")
            obj.pk = started.pk
            obj.champion = started.champion
            return
        # Ramping the share or switching shadow: audited as before/after, effective at once here (an
        # ended experiment does not change).
        experiment_change(experiment=obj, user=request.user, traffic_share=obj.traffic_share, shadow=obj.shadow)

    @admin.action(description="End the selected experiments")
    def end(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        for exp in queryset.filter(active=True):
            experiment_end(experiment=exp, user=request.user)
        self.message_user(request, "Ended; the champion answers every household again.", messages.SUCCESS)



@admin.register(MonitoringRun)
class MonitoringRunAdmin(ReadOnlyAdmin):
    list_display = ("ran_at", "model_version", "rows", "feature_psi_max", "prediction_psi", "roc_auc", "drift")


@admin.register(ModelAlert)
class ModelAlertAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "metric", "scope", "value", "threshold", "message", "delivered_at")
