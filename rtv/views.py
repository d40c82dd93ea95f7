"""The site's front door: where a person lands after signing in."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponseRedirect

from ingestion.views import UPLOAD_PAGE_ROLES
from rtv.roles import REVIEWER, has_role


@login_required
def home(request: HttpRequest) -> HttpResponseRedirect:
    """The first page the person's role opens: uploads for those who send files, the admin (the
    review queue) for reviewers, the API's documentation for field officers (their door is the app)."""
    if has_role(request.user, *UPLOAD_PAGE_ROLES):
        return HttpResponseRedirect("/uploads/")
    if has_role(request.user, REVIEWER) and request.user.is_staff:
        return HttpResponseRedirect("/admin/")
    return HttpResponseRedirect("/api/docs/")
