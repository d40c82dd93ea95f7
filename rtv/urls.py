from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from rest_framework_simplejwt.views import TokenRefreshView

from ingestion.views import uploads_page
from modelling.views import monitoring_page
from quality.views import rules_page, trend_page
from rtv.api.auth import LogoutView, TokenView
from rtv.api.views import ApiDocsView, OpenApiView, SchemaView
from rtv.metrics import metrics_view
from rtv.throttles import throttled_sign_in
from rtv.views import home


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for the container HEALTHCHECK (no auth, no database)."""
    return JsonResponse({"status": "ok"})


api_v1 = [
    path("auth/token/", TokenView.as_view(), name="token"),
    path("auth/token/refresh/", TokenRefreshView.as_view(), name="token-refresh"),
    path("auth/logout/", LogoutView.as_view(), name="logout"),
    path("schema/", SchemaView.as_view(), name="data-schema"),
    path("", include("ingestion.api.urls")),
    path("", include("modelling.urls")),
]

handler404 = "rtv.errors.not_found"
handler400 = "rtv.errors.bad_request_page"
admin.site.login = throttled_sign_in(admin.site.login)  # type: ignore[method-assign]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include((api_v1, "api"), namespace="v1")),
    path("api/schema/", OpenApiView.as_view(), name="openapi-schema"),
    path("api/docs/", ApiDocsView.as_view(url_name="openapi-schema"), name="api-docs"),
    # The pages' own sign-in: partners are not staff, so the admin's login (staff only) turned them away.
    path("accounts/login/", throttled_sign_in(auth_views.LoginView.as_view(redirect_authenticated_user=True)),
         name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout-page"),
    path("uploads/", uploads_page, name="uploads-page"),
    path("quality/", trend_page, name="quality-page"),
    path("quality/rules/", rules_page, name="rules-page"),
    path("models/monitoring/", monitoring_page, name="monitoring-page"),
    path("", home, name="home"),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="prometheus-django-metrics"),
]
