"""Staff pages for quality: the trend chart and the rule documentation."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from rtv.roles import ADMIN, DATA_MANAGER, DATA_SCIENTIST, REVIEWER, has_role

from .models import QualityAlert, QualitySnapshot, Rule


def _staff(request: HttpRequest) -> None:
    if not has_role(request.user, REVIEWER, DATA_MANAGER, DATA_SCIENTIST, ADMIN):
        raise PermissionDenied


@login_required
def trend_page(request: HttpRequest) -> HttpResponse:
    _staff(request)
    snaps = list(QualitySnapshot.objects.order_by("-day")[:60])[::-1]
    points = [s for s in snaps if s.mean_score is not None]
    width, height = 720, 220
    lo = min((s.mean_score for s in points), default=0.0)  # type: ignore[type-var]
    lo = max(0.0, min(lo, 0.9) - 0.02)
    coords = []
    for i, s in enumerate(points):
        x = 40 + (width - 60) * (i / max(len(points) - 1, 1))
        y = 10 + (height - 40) * (1 - (s.mean_score - lo) / max(1.0 - lo, 1e-9))  # type: ignore[operator]
        coords.append((round(x, 1), round(y, 1), s))
    return render(request, "quality/trend.html", {
        "snapshots": snaps[::-1], "coords": coords, "polyline": " ".join(f"{x},{y}" for x, y, _ in coords),
        "width": width, "height": height, "low": round(lo, 3),
        "alerts": QualityAlert.objects.select_related("snapshot").order_by("-created_at")[:20]})


@login_required
def rules_page(request: HttpRequest) -> HttpResponse:
    _staff(request)
    rules = Rule.objects.order_by("level", "field", "kind")
    levels: dict[str, list[Rule]] = {}
    for r in rules:
        levels.setdefault(r.level, []).append(r)
    return render(request, "quality/rules.html", {"levels": levels, "count": rules.count()})
