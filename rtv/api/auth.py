"""JWT auth endpoints: token, refresh, logout (refresh token blacklisted)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken, TokenError
from rest_framework_simplejwt.serializers import TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.utils import get_md5_hash_password
from rest_framework_simplejwt.views import TokenObtainPairView

from rtv.authentication import MALFORMED_CLAIMS, user_id_of
from rtv.errors import ApiError
from rtv.throttles import SIGN_IN_THROTTLES


class LogoutIn(serializers.Serializer):
    refresh = serializers.CharField()


class LogoutView(APIView):
    @extend_schema(request=LogoutIn, responses={205: None})
    def post(self, request: Request) -> Response:
        data = LogoutIn(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            RefreshToken(data.validated_data["refresh"]).blacklist()
        except (TokenError, *MALFORMED_CLAIMS) as exc:
            raise ApiError("token_invalid", "The refresh token is invalid or expired.",
                           errors=[{"field": "refresh", "code": "token_invalid", "message": str(exc)}]) from exc
        return Response(status=status.HTTP_205_RESET_CONTENT)


class RevocableRefreshSerializer(TokenRefreshSerializer):
    """simplejwt's refresh, which checks the password claim too (``CHECK_REVOKE_TOKEN``): simplejwt
    checks it on access tokens only, so a refresh token taken before a password change went on
    minting new tokens, rotation after rotation.  A deleted account is refused the same way."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        try:
            if api_settings.CHECK_REVOKE_TOKEN:
                payload = self.token_class(attrs["refresh"]).payload
                try:
                    user_id = user_id_of(payload)
                except KeyError:
                    user_id = None
                user = get_user_model().objects.filter(**{api_settings.USER_ID_FIELD: user_id}).first() \
                    if user_id is not None else None
                if user is None or payload.get(api_settings.REVOKE_TOKEN_CLAIM) != get_md5_hash_password(user.password):
                    raise AuthenticationFailed("The password has changed since this token was issued: sign in again.",
                                               code="password_changed")
            return super().validate(attrs)
        except MALFORMED_CLAIMS as exc:
            raise InvalidToken("Token has a malformed claim") from exc


class TokenView(TokenObtainPairView):
    """simplejwt's sign-in, with the sign-in limits: past them a 429 ``throttled`` says when to try again."""

    throttle_classes = SIGN_IN_THROTTLES
