"""Shared API endpoints: the data contract for offline validation on devices."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
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
