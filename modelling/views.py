"""Staff page: the model's drift and performance, night by night."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from rtv.roles import ADMIN, DATA_MANAGER, DATA_SCIENTIST, REVIEWER, has_role

from .models import ModelAlert, MonitoringRun

SERIES = (("feature_psi_max", "#b5542d", "largest feature PSI"), ("prediction_psi", "#2f5f8a", "predicted-mix PSI"))


@login_required
def monitoring_page(request: HttpRequest) -> HttpResponse:
    if not has_role(request.user, REVIEWER, DATA_MANAGER, DATA_SCIENTIST, ADMIN):
        raise PermissionDenied
    runs = list(MonitoringRun.objects.select_related("model_version").order_by("-ran_at")[:60])[::-1]
    width, height = 720, 220
    top = max([0.3, settings.RTV_MONITOR_PSI_ALERT * 1.2] + [getattr(r, key) or 0.0 for r in runs for key, _, _ in SERIES])
    lines = []
    for key, colour, label in SERIES:
        points = []
        for i, r in enumerate(runs):
            value = getattr(r, key)
            if value is None:
                continue
            x = 40 + (width - 60) * (i / max(len(runs) - 1, 1))
            y = 10 + (height - 40) * (1 - value / top)
            points.append((round(x, 1), round(y, 1), r, value))
        lines.append({"label": label, "colour": colour, "points": points,
                      "polyline": " ".join(f"{x},{y}" for x, y, _, _ in points)})
    major_y = round(10 + (height - 40) * (1 - settings.RTV_MONITOR_PSI_ALERT / top), 1)
    return render(request, "modelling/monitoring.html", {
        "runs": runs[::-1], "lines": lines, "width": width, "height": height, "top": round(top, 3), "major_y": major_y,
        "alert_at": settings.RTV_MONITOR_PSI_ALERT,
        "alerts": ModelAlert.objects.select_related("run").order_by("-created_at")[:20]})
