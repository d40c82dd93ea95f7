from django.urls import path

from .api import ModelListView, PromoteView, RetrainView, RollbackView, TriggersView

urlpatterns = [
    path("models/", ModelListView.as_view(), name="models"),
    path("models/<int:version>/promote/", PromoteView.as_view(), name="model-promote"),
    path("models/rollback/", RollbackView.as_view(), name="model-rollback"),
    path("models/retrain/", RetrainView.as_view(), name="model-retrain"),
    path("models/triggers/", TriggersView.as_view(), name="model-triggers"),
]
