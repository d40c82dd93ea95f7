"""Shared API endpoints: the data contract for offline validation on devices."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponseBase
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import exceptions, serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from rtv.selectors import current_schema


class SchemaFieldOut(serializers.Serializer):
    name = serializers.CharField()
    aliases = serializers.ListField(child=serializers.CharField())
    source_position = serializers.IntegerField(allow_null=True)
    type = serializers.CharField()
    unit = serializers.CharField()
    required = serializers.BooleanField()
    allowed = serializers.ListField()
    min = serializers.FloatField(source="min_value", allow_null=True)
    max = serializers.FloatField(source="max_value", allow_null=True)
    role = serializers.CharField()
    pii = serializers.CharField()
    description = serializers.CharField()


class SchemaOut(serializers.Serializer):
    version = serializers.CharField()
    fields = SchemaFieldOut(many=True)


class SchemaView(APIView):
    """The current survey data contract (read-only; any authenticated user or device)."""

    @extend_schema(responses=SchemaOut)
    def get(self, request: Request) -> Response:
        schema = current_schema()
        return Response(SchemaOut({"version": schema.version.version, "fields": schema.fields}).data)


class _JsonErrors:
    """Errors in the API's one JSON shape.  drf-spectacular's views render with the document's own
    renderers (YAML, Swagger's HTML), which wrote a 401 or 406 as YAML or as a bare HTML line."""

    def finalize_response(self, request: Request, response: HttpResponseBase, *args: Any, **kwargs: Any) -> Any:
        if isinstance(response, Response) and response.status_code >= 400:
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]


class OpenApiView(_JsonErrors, SpectacularAPIView):
    """The OpenAPI document (signed-in users and devices)."""


class ApiDocsView(_JsonErrors, SpectacularSwaggerView):
    """The browsable docs: a page for people.  A browser that is not signed in is sent to the
    sign-in page and back, as every other page does; a bad bearer token is the API's JSON 401."""

    def handle_exception(self, exc: Exception) -> Any:
        if isinstance(exc, exceptions.NotAuthenticated) and "Authorization" not in self.request.headers:
            return redirect_to_login(self.request.get_full_path(), settings.LOGIN_URL)
        return super().handle_exception(exc)
