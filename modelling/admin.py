from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from rtv.admin import ReadOnlyAdmin
from rtv.outbox import outbox_enqueue
from rtv.roles import ADMIN, DATA_SCIENTIST, has_role

from .models import ModelEvent, ModelVersion, Prediction, RetrainDecision
from .promotion import PromotionRefused, model_promote


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ("name", "version", "algorithm", "aliases", "training_rows", "created_at")
    actions = ["promote", "retrain"]

    @admin.action(description="Train a new version now (queued; the selection is ignored)")
    def retrain(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        with transaction.atomic():
            outbox_enqueue("modelling.train_and_score")
        self.message_user(request, "Training queued; the new version appears here as challenger.", messages.SUCCESS)

    @admin.action(description="Promote to champion (if it passes the gate)")
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

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return has_role(request.user, DATA_SCIENTIST, ADMIN)


@admin.register(ModelEvent)
class ModelEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "name", "action", "from_version", "to_version", "forced", "actor")


@admin.register(Prediction)
class PredictionAdmin(ReadOnlyAdmin):
    list_display = ("record", "model_version", "probability_vulnerable", "predicted_vulnerable", "variant", "created_at")
    list_select_related = ("record", "model_version")


@admin.register(RetrainDecision)
class RetrainDecisionAdmin(ReadOnlyAdmin):
    list_display = ("evaluated_at", "champion_version", "fired", "retrain_queued")
