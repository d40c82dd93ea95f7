"""Model endpoints: the registry (list, promote, roll back, retrain), predictions, households,
experiments and monitoring."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import F
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ingestion.api.submissions import AwareDateTimeField, record_body
from ingestion.models import STORED_TEXT_LIMITS
from ingestion.selectors import records_visible_to
from ingestion.submissions import Envelope, payloads_check
from rtv.errors import ApiError
from rtv.roles import ADMIN, DATA_MANAGER, DATA_SCIENTIST, FIELD_OFFICER, REVIEWER, HasRole

from . import registry, serving
from .experiments import ExperimentNameTaken, experiment_end, experiment_report, experiment_start
from .models import Experiment, ModelEvent, ModelVersion, MonitoringRun, RetrainDecision
from .promotion import NoSuchVersion, PromotionRefused, model_promote, model_rollback
from .triggers import retrain_requested, retrain_triggers_evaluate

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
        except NoSuchVersion as exc:
            raise ApiError("not_found", str(exc), status_code=404) from exc
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
        decision = retrain_requested(user=request.user, door="api")
        return Response({"queued": True, "decision_id": decision.pk, "fired": decision.fired,
                         "evaluated_at": decision.evaluated_at.isoformat()}, status=202)


# ---- predictions ---------------------------------------------------------------------------------
PREDICT = HasRole.of(FIELD_OFFICER, REVIEWER, DATA_MANAGER, DATA_SCIENTIST, ADMIN)


class PredictIn(serializers.Serializer):
    household_id = serializers.CharField(max_length=64, required=False, allow_blank=True)
    collected_at = AwareDateTimeField(required=False, allow_null=True)  # as a submission's: the offset said
    data = serializers.DictField()
    store = serializers.BooleanField(default=False, help_text="keep the prediction (and the scored data)")


def _no_champion(exc: Exception) -> ApiError:
    return ApiError("model_unavailable", f"No model can answer yet: {exc}", status_code=503)


class PredictView(APIView):
    """Score one household payload: probabilities, confidence, reasons, and which model said it.
    Stored only when ``store`` is true."""

    permission_classes = [PREDICT]

    @extend_schema(request=PredictIn, responses={200: dict, 400: dict, 503: dict})
    def post(self, request: Request) -> Response:
        body = PredictIn(data=request.data)
        body.is_valid(raise_exception=True)
        v = body.validated_data
        data = v["data"]
        top = (v.get("household_id") or "").strip()
        if top and data.get("household_id") in (None, ""):  # the household named once, at the top
            data = {**data, "household_id": top}
        envelope = Envelope(submission_id=uuid.uuid4(), data=data, collected_at=v.get("collected_at"))
        typed, errors = payloads_check([envelope])
        if errors[0]:
            raise ApiError("invalid_payload", "The payload has invalid fields; nothing was scored.",
                           status_code=400, errors=errors[0])
        # The household as the submissions and the batch job name it (trimmed, as validated), so its
        # experiment bucket is the same whichever door scores it.  ``household_id`` names the household
        # to answer for when given (data.household_id otherwise); naming two households is refused.
        given = typed["household_id"].iloc[0] if "household_id" in typed else None
        in_data = "" if given is None or pd.isna(given) else str(given).strip()
        if top and in_data and top != in_data:
            raise ApiError("invalid_payload", "household_id and data.household_id name different households; "
                           "nothing was scored.", status_code=400,
                           errors=[{"field": "household_id", "code": "conflict",
                                    "message": f"{top!r} here, {in_data!r} in data.household_id"}])
        household_id = top or in_data or None
        when = v.get("collected_at")
        if when is None:  # no date, no temporal features: the pipeline reads absent dates as missing
            frame = typed
        else:  # the household's earlier surveys give the time since the last one
            history = serving.household_history(household_id) if household_id else []
            frame = serving.with_previous_survey(typed.assign(collected_at=when),
                                                 np.array([history[0][0] if history else -1]), history=history)
        try:
            [answer] = serving.predictions_make(frame, household_ids=[household_id], store=v["store"],
                                                user=request.user, payloads=[data] if v["store"] else None)
        except serving.NoChampion as exc:
            raise _no_champion(exc) from exc
        answer["stored"] = v["store"]
        return Response(answer)


class HouseholdView(APIView):
    """The household's latest record, its status, its latest prediction and the lineage behind it."""

    permission_classes = [PREDICT]

    @extend_schema(responses={200: dict, 404: dict})
    def get(self, request: Request, household_id: str) -> Response:
        if "\x00" in household_id or len(household_id) > STORED_TEXT_LIMITS["household_id"]:
            raise ApiError("not_found", "No such household.", status_code=404)  # no stored id is like it
        record = (records_visible_to(request.user).filter(household__household_id=household_id,
                                                          superseded_by__isnull=True)
                  .select_related("household", "batch")
                  # the latest survey of the household (a correction of an older one is not newer)
                  .order_by(F("collected_at").desc(nulls_last=True), "-received_at", "-pk").first())
        if record is None:
            raise ApiError("not_found", "No such household.", status_code=404)
        prediction = serving.latest_predictions([record.pk]).get(record.pk)
        mv = prediction.model_version if prediction is not None else None
        snapshot = mv.snapshot if mv is not None else None
        return Response({
            "household_id": household_id,
            "record": record_body(record),
            "status": {"review": record.review_status, "progress_status": record.progress_status or None,
                       "vulnerable": record.vulnerable},
            "prediction": serving.prediction_body(prediction) if prediction is not None else None,
            "lineage": {
                "record": {"id": record.pk, "version": record.version,
                           "submission_id": str(record.submission_id) if record.submission_id else None,
                           "root_id": record.root_id or record.pk, "received_at": record.received_at.isoformat()},
                "ingestion_batch": {"id": str(record.batch_id), "channel": record.batch.channel,
                                    "source": record.batch.source, "format": record.batch.format,
                                    "sha256": record.batch.sha256 or None, "row_number": record.row_number},
                "feature_snapshot": None if snapshot is None else {
                    "id": str(snapshot.pk), "sha256": snapshot.sha256, "rows": snapshot.rows, "file": snapshot.file_key,
                    "schema_version": snapshot.schema_version_id},
                "model_version": None if mv is None else {"name": mv.name, "version": mv.version,
                                                          "mlflow_run_id": mv.mlflow_run_id, "algorithm": mv.algorithm},
            },
        })


# ---- experiments -----------------------------------------------------------------------------------
def experiment_body(e: Experiment) -> dict[str, Any]:
    return {"id": e.pk, "name": e.name, "champion": e.champion.version, "challenger": e.challenger.version,
            "traffic_share": e.traffic_share, "shadow": e.shadow, "active": e.active,
            "started_at": e.started_at.isoformat(), "ended_at": e.ended_at.isoformat() if e.ended_at else None}


class ExperimentIn(serializers.Serializer):
    name = serializers.SlugField(max_length=80)
    challenger = serializers.IntegerField(help_text="model version number")
    traffic_share = serializers.FloatField(min_value=0, max_value=1, default=0.1)
    shadow = serializers.BooleanField(default=False)


class ExperimentListView(APIView):
    permission_classes = [SEE]

    def get_permissions(self) -> list[Any]:
        return [MANAGE()] if self.request.method == "POST" else [SEE()]

    @extend_schema(responses={200: dict})
    def get(self, request: Request) -> Response:
        qs = Experiment.objects.select_related("champion", "challenger")[:50]
        return Response({"experiments": [experiment_body(e) for e in qs]})

    @extend_schema(request=ExperimentIn, responses={201: dict, 400: dict, 409: dict})
    def post(self, request: Request) -> Response:
        body = ExperimentIn(data=request.data)
        body.is_valid(raise_exception=True)
        v = body.validated_data
        challenger = ModelVersion.objects.filter(name=settings.RTV_MODEL_NAME, version=v["challenger"]).first()
        if challenger is None:
            raise ApiError("not_found", "No such model version.", status_code=400,
                           errors=[{"field": "challenger", "code": "not_found", "message": str(v["challenger"])}])
        try:
            exp = experiment_start(name=v["name"], challenger=challenger, traffic_share=v["traffic_share"],
                                   shadow=v["shadow"], user=request.user)
        except ExperimentNameTaken as exc:
            raise ApiError("experiment_exists", "An experiment with this name exists; names are part of the "
                           "assignment hash and are never reused.", status_code=409,
                           errors=[{"field": "name", "code": "unique", "message": v["name"]}]) from exc
        except serving.NoChampion as exc:
            raise ApiError("no_champion", str(exc), status_code=409) from exc
        except DjangoValidationError as exc:
            raise ApiError("invalid_experiment", "The experiment is not valid.", status_code=400,
                           errors=[{"field": f, "code": "invalid", "message": m} for f, ms in exc.message_dict.items()
                                   for m in ms]) from exc
        return Response(experiment_body(exp), status=201)


class ExperimentReportView(APIView):
    permission_classes = [SEE]

    @extend_schema(responses={200: dict, 404: dict})
    def get(self, request: Request, pk: int) -> Response:
        exp = Experiment.objects.select_related("champion", "challenger").filter(pk=pk).first()
        if exp is None:
            raise ApiError("not_found", "No such experiment.", status_code=404)
        return Response(experiment_report(exp))


class ExperimentEndView(APIView):
    permission_classes = [MANAGE]

    @extend_schema(request=None, responses={200: dict, 404: dict})
    def post(self, request: Request, pk: int) -> Response:
        exp = Experiment.objects.select_related("champion", "challenger").filter(pk=pk, active=True).first()
        if exp is None:
            raise ApiError("not_found", "No such running experiment.", status_code=404)
        return Response(experiment_body(experiment_end(experiment=exp, user=request.user)))


class MonitoringView(APIView):
    """The daily model-performance runs (latest first) and their alerts."""

    permission_classes = [SEE]

    @extend_schema(responses={200: dict})
    def get(self, request: Request) -> Response:
        runs = MonitoringRun.objects.select_related("model_version").prefetch_related("alerts")[:60]
        return Response({"runs": [{
            "ran_at": r.ran_at.isoformat(), "model_version": r.model_version.version if r.model_version else None,
            "rows": r.rows, "feature_psi_max": r.feature_psi_max, "prediction_psi": r.prediction_psi,
            "roc_auc": r.roc_auc, "drift": r.drift, "results": r.results,
            "alerts": [{"metric": a.metric, "scope": a.scope, "value": a.value, "threshold": a.threshold,
                        "message": a.message} for a in r.alerts.all()]} for r in runs]})
