"""JWT authentication that reads the user and their roles in one query.

simplejwt loads the user by id, then the role check (``rtv.roles``) asks for the user's groups: two
round trips on every API request.  Here one query joins the user to the group names; the roles are
cached on the user object exactly as ``user_roles`` caches them.  The checks are simplejwt's own.
"""

from __future__ import annotations

from typing import Any

from django.db import router
from django.utils.translation import gettext_lazy as _
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import Token
from rest_framework_simplejwt.utils import get_md5_hash_password


class RoleJWTAuthentication(JWTAuthentication):
    def get_user(self, validated_token: Token) -> Any:
        from .roles import ADMIN  # rtv.roles imports DRF, whose settings import this module

        try:
            user_id = validated_token[api_settings.USER_ID_CLAIM]
        except KeyError as e:
            raise InvalidToken(_("Token contained no recognizable user identification")) from e
        model = self.user_model
        fields = [f.attname for f in model._meta.concrete_fields]
        rows = list(model._default_manager.filter(**{api_settings.USER_ID_FIELD: user_id})
                    .values_list(*fields, "groups__name"))
        if not rows:
            raise AuthenticationFailed(_("User not found"), code="user_not_found")
        user = model.from_db(router.db_for_read(model), fields, rows[0][:-1])
        roles = {row[-1] for row in rows if row[-1] is not None}
        if getattr(user, "is_superuser", False):
            roles.add(ADMIN)
        user._rtv_roles = roles  # what rtv.roles.user_roles would have read

        if api_settings.CHECK_USER_IS_ACTIVE and not user.is_active:
            raise AuthenticationFailed(_("User is inactive"), code="user_inactive")
        if api_settings.CHECK_REVOKE_TOKEN and validated_token.get(
                api_settings.REVOKE_TOKEN_CLAIM) != get_md5_hash_password(user.password):
            raise AuthenticationFailed(_("The user's password has been changed."), code="password_changed")
        return user
