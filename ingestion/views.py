"""Staff pages (templates/): thin views over the same services and selectors as the API."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from rtv.roles import ADMIN, DATA_MANAGER, DATA_SCIENTIST, PARTNER, has_role

from .selectors import batches_visible_to

UPLOAD_PAGE_ROLES = (DATA_MANAGER, DATA_SCIENTIST, ADMIN, PARTNER)  # those who send files


@login_required
def uploads_page(request: HttpRequest) -> HttpResponse:
    if not has_role(request.user, *UPLOAD_PAGE_ROLES):
        raise PermissionDenied
    batches = batches_visible_to(request.user).exclude(channel="device").order_by("-created_at")[:25]
    return render(request, "ingestion/uploads.html", {
        "batches": batches, "max_rows": f"{settings.RTV_MAX_UPLOAD_ROWS:,}",
        "max_mb": settings.RTV_MAX_UPLOAD_BYTES // (1 << 20)})
