from django.urls import path

from .api import (
    ExperimentEndView,
    ExperimentListView,
    ExperimentReportView,
    HouseholdView,
    ModelListView,
    MonitoringView,
    PredictView,
    PromoteView,
    RetrainView,
    RollbackView,
    TriggersView,
)

urlpatterns = [
    path("models/", ModelListView.as_view(), name="models"),
    path("models/<int:version>/promote/", PromoteView.as_view(), name="model-promote"),
    path("models/rollback/", RollbackView.as_view(), name="model-rollback"),
    path("models/retrain/", RetrainView.as_view(), name="model-retrain"),
    path("models/triggers/", TriggersView.as_view(), name="model-triggers"),
    path("models/monitoring/", MonitoringView.as_view(), name="model-monitoring"),
    path("predictions/", PredictView.as_view(), name="predictions"),
    path("households/<str:household_id>/", HouseholdView.as_view(), name="household-detail"),
    path("experiments/", ExperimentListView.as_view(), name="experiments"),
    path("experiments/<int:pk>/report/", ExperimentReportView.as_view(), name="experiment-report"),
    path("experiments/<int:pk>/end/", ExperimentEndView.as_view(), name="experiment-end"),
]
