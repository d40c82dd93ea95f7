"""Model registry endpoints: list versions, promote, roll back, retrain."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from rtv.errors import ApiError
from rtv.outbox import outbox_enqueue
from rtv.roles import ADMIN, DATA_MANAGER, DATA_SCIENTIST, REVIEWER, HasRole

from . import registry
from .models import ModelEvent, ModelVersion, RetrainDecision
from .promotion import PromotionRefused, model_promote, model_rollback
from .triggers import retrain_triggers_evaluate

SEE = HasRole.of(DATA_SCIENTIST, DATA_MANAGER, REVIEWER, ADMIN)
MANAGE = HasRole.of(DATA_SCIENTIST, ADMIN)


def version_body(mv: ModelVersion) -> dict[str, Any]:
    return {"name": mv.name, "version": mv.version, "algorithm": mv.algorithm, "aliases": mv.aliases,
            "metrics": {k: v for k, v in mv.metrics.items() if not isinstance(v, dict)},
            "training_rows": mv.training_rows, "features": mv.features, "mlflow_run_id": mv.mlflow_run_id,
            "created_at": mv.created_at.isoformat()}


class ModelListView(APIView):
    permission_classes = [SEE]

    @extend_schema(responses={200: dict})
    def get(self, request: Request) -> Response:
        name = settings.RTV_MODEL_NAME
        versions = ModelVersion.objects.filter(name=name).order_by("-version")
        events = ModelEvent.objects.filter(name=name).select_related("actor")[:20]
        decisions = RetrainDecision.objects.all()[:10]
        return Response({
            "name": name, "champion": registry.alias_version(name, registry.CHAMPION) if versions else None,
            "versions": [version_body(v) for v in versions],
            "events": [{"action": e.action, "from_version": e.from_version, "to_version": e.to_version,
                        "forced": e.forced, "by": e.actor.get_username() if e.actor else None,
                        "at": e.created_at.isoformat(), "gate": e.gate} for e in events],
            "retrain_decisions": [{"at": d.evaluated_at.isoformat(), "fired": d.fired, "queued": d.retrain_queued}
                                  for d in decisions],
        })


class PromoteIn(serializers.Serializer):
    force = serializers.BooleanField(default=False)


class PromoteView(APIView):
    permission_classes = [MANAGE]

    @extend_schema(request=PromoteIn, responses={200: dict, 409: dict})
    def post(self, request: Request, version: int) -> Response:
        data = PromoteIn(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            mv = model_promote(version=version, user=request.user, force=data.validated_data["force"])
        except PromotionRefused as exc:
            raise ApiError("promotion_refused", str(exc), status_code=409, extra={"gate": exc.gate}) from exc
        return Response(version_body(mv))


class RollbackView(APIView):
    permission_classes = [MANAGE]

    @extend_schema(request=None, responses={200: dict, 409: dict})
    def post(self, request: Request) -> Response:
        try:
            mv = model_rollback(user=request.user)
        except PromotionRefused as exc:
            raise ApiError("rollback_refused", str(exc), status_code=409) from exc
        return Response(version_body(mv))


class TriggersView(APIView):
    """Evaluate the retraining triggers now (the manual trigger fires); the decision is stored."""

    permission_classes = [MANAGE]

    @extend_schema(request=None, responses={200: dict})
    def post(self, request: Request) -> Response:
        d = retrain_triggers_evaluate(manual=True)
        return Response({"fired": d.fired, "retrain_queued": d.retrain_queued, "inputs": d.inputs,
                         "evaluated_at": d.evaluated_at.isoformat()})


class RetrainView(APIView):
    """Queue a training run (the same service as the command); 202 at once."""

    permission_classes = [MANAGE]

    @extend_schema(request=None, responses={202: dict})
    def post(self, request: Request) -> Response:
        with transaction.atomic():
            message = outbox_enqueue("modelling.train_and_score")
        return Response({"queued": True, "outbox_id": message.pk}, status=202)
