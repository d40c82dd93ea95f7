"""Quality endpoints: a batch's quality report, the daily trend, the rule set as an expectation suite."""

from __future__ import annotations

from django.db.models import Q
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ingestion.selectors import access_batch
from rtv.roles import ADMIN, DATA_MANAGER, DATA_SCIENTIST, PARTNER, REVIEWER, HasRole

from .export import expectation_suite
from .models import QualityAlert, QualitySnapshot
from .rules import active_rules

STAFF = HasRole.of(REVIEWER, DATA_MANAGER, DATA_SCIENTIST, ADMIN)


class UploadQualityView(APIView):
    """The batch quality report: scores, counts by rule, column and district."""

    permission_classes = [HasRole.of(REVIEWER, DATA_MANAGER, DATA_SCIENTIST, ADMIN, PARTNER)]

    @extend_schema(responses={200: dict, 404: dict})
    def get(self, request: Request, ingestion_id: str) -> Response:
        batch = access_batch(request.user, ingestion_id)
        return Response({"ingestion_id": str(batch.pk), "state": batch.status, "rows": batch.row_count,
                         "accepted": batch.accepted, "rejected": batch.rejected, "warnings": batch.warnings,
                         **(batch.quality or {"scores": None, "by_rule": {}, "by_column": {}, "by_district": {}})})


class QualityTrendView(APIView):
    permission_classes = [STAFF]

    @extend_schema(responses={200: dict})
    def get(self, request: Request) -> Response:
        try:
            days = max(1, min(int(request.query_params.get("days", 30)), 366))
        except ValueError:
            days = 30
        snaps = list(QualitySnapshot.objects.order_by("-day")[:days])[::-1]
        alerts = QualityAlert.objects.filter(Q(snapshot__in=snaps)).select_related("snapshot")
        return Response({
            "days": [{"day": s.day.isoformat(), "records": s.records, "errors": s.errors, "warnings": s.warnings,
                      "mean_score": s.mean_score, "completeness": s.completeness, "validity": s.validity,
                      "consistency": s.consistency, "by_district": s.by_district} for s in snaps],
            "alerts": [{"day": a.snapshot.day.isoformat(), "metric": a.metric, "previous": a.previous,
                        "current": a.current, "message": a.message} for a in alerts],
        })


class ExpectationSuiteView(APIView):
    permission_classes = [STAFF]

    @extend_schema(responses={200: dict})
    def get(self, request: Request) -> Response:
        response = Response(expectation_suite(active_rules()))
        response["Content-Disposition"] = 'attachment; filename="rtv_expectation_suite.json"'
        return response
