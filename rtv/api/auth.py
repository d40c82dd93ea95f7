"""JWT auth endpoints: token, refresh, logout (refresh token blacklisted)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import RefreshToken

from rtv.errors import ApiError


class LogoutIn(serializers.Serializer):
    refresh = serializers.CharField()


class LogoutView(APIView):
    @extend_schema(request=LogoutIn, responses={205: None})
    def post(self, request: Request) -> Response:
        data = LogoutIn(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            RefreshToken(data.validated_data["refresh"]).blacklist()
        except TokenError as exc:
            raise ApiError("token_invalid", "The refresh token is invalid or expired.",
                           errors=[{"field": "refresh", "code": "token_invalid", "message": str(exc)}]) from exc
        return Response(status=status.HTTP_205_RESET_CONTENT)
