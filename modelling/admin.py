from django.contrib import admin

from rtv.admin import ReadOnlyAdmin

from .models import ModelVersion, Prediction


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ("name", "version", "algorithm", "aliases", "training_rows", "created_at")


@admin.register(Prediction)
class PredictionAdmin(ReadOnlyAdmin):
    list_display = ("record", "model_version", "probability_vulnerable", "predicted_vulnerable", "variant", "created_at")
    list_select_related = ("record", "model_version")
