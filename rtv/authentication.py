"""JWT authentication that reads the user and their roles in one query (composed once, on PostgreSQL).

simplejwt loads the user by id, then the role check (``rtv.roles``) asks for the user's groups: two
round trips on every API request.  Here one query joins the user to the group names; the roles are
cached on the user object exactly as ``user_roles`` caches them.  The checks are simplejwt's own.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import connections, router
from django.utils.translation import gettext_lazy as _
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken, TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import Token
from rest_framework_simplejwt.utils import aware_utcnow, get_md5_hash_password

# Validated tokens by their bytes.  A token's signature and claims decode the same way every time;
# only the clock can change the verdict, so the expiry is checked again on each use.  Token classes
# checked against a blacklist (sliding tokens) are never remembered: a blacklisting must count at once.
_VALIDATED: dict[bytes, Token] = {}
_VALIDATED_MAX = 4096


# What a correctly signed token with a claim of the wrong type raises in simplejwt or in the user
# look-up: an ``exp`` of 1e300 (OverflowError), a ``user_id`` of ["1"] or "abc" (TypeError,
# ValueError).  Only the holder of the signing key can make one, but it is still a 401, not a 500.
MALFORMED_CLAIMS = (OverflowError, TypeError, ValueError)


def user_id_of(payload: dict[str, Any]) -> Any:
    """The token's user id as the user model's key takes it; InvalidToken when it is not one
    (KeyError when the claim is missing)."""
    from django.contrib.auth import get_user_model

    value = payload[api_settings.USER_ID_CLAIM]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidToken(_("Token contained no recognizable user identification"))
    try:
        return get_user_model()._meta.get_field(api_settings.USER_ID_FIELD).to_python(value)
    except (ValidationError, *MALFORMED_CLAIMS) as exc:
        raise InvalidToken(_("Token contained no recognizable user identification")) from exc


class RoleJWTAuthentication(JWTAuthentication):
    def get_validated_token(self, raw_token: bytes) -> Token:
        """simplejwt's validation, remembered for the token's life (decoding it was ~3% of a device
        submission's CPU)."""
        token = _VALIDATED.get(raw_token)
        if token is not None:
            try:
                token.check_exp(current_time=aware_utcnow())
                return token
            except TokenError:
                _VALIDATED.pop(raw_token, None)
        try:
            token = super().get_validated_token(raw_token)
        except MALFORMED_CLAIMS as exc:
            raise InvalidToken(_("Token has a malformed claim")) from exc
        if not hasattr(token, "check_blacklist"):
            if len(_VALIDATED) >= _VALIDATED_MAX:
                _VALIDATED.clear()
            _VALIDATED[raw_token] = token
        return token

    def get_user(self, validated_token: Token) -> Any:
        from .roles import ADMIN  # rtv.roles imports DRF, whose settings import this module

        try:
            user_id = user_id_of(validated_token.payload)
        except KeyError as e:
            raise InvalidToken(_("Token contained no recognizable user identification")) from e
        model = self.user_model
        fields = [f.attname for f in model._meta.concrete_fields]
        db = router.db_for_read(model)
        sql = _user_sql(model, db)
        if sql is not None:  # PostgreSQL: the same join as the ORM's, without composing it per request
            with connections[db].cursor() as cursor:
                cursor.execute(sql, [user_id])
                rows = cursor.fetchall()
        else:
            rows = list(model._default_manager.filter(**{api_settings.USER_ID_FIELD: user_id})
                        .values_list(*fields, "groups__name"))
        if not rows:
            raise AuthenticationFailed(_("User not found"), code="user_not_found")
        user = model.from_db(db, fields, rows[0][:-1])
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


@cache
def _user_sql(model: Any, db: str) -> str | None:
    """The user row joined to its group names, by the token's user id: built once per user model.
    PostgreSQL only (its values need no conversion; SQLite's booleans and dates do, and go through
    the ORM); None also for a user model without Django's ``groups``."""
    if connections[db].vendor != "postgresql":
        return None
    try:
        groups = model._meta.get_field("groups")
    except FieldDoesNotExist:
        return None
    q = connections[db].ops.quote_name
    through, group = groups.remote_field.through._meta, groups.related_model._meta
    columns = ", ".join(f"u.{q(f.column)}" for f in model._meta.concrete_fields)
    key = model._meta.get_field(api_settings.USER_ID_FIELD).column
    return (f"SELECT {columns}, g.{q(group.get_field('name').column)} FROM {q(model._meta.db_table)} u "
            f"LEFT JOIN {q(through.db_table)} ug ON ug.{q(groups.m2m_column_name())} = u.{q(model._meta.pk.column)} "
            f"LEFT JOIN {q(group.db_table)} g ON g.{q(group.pk.column)} = ug.{q(groups.m2m_reverse_name())} "
            f"WHERE u.{q(key)} = %s")


class RoleJWTScheme(SimpleJWTScheme):
    """The API's security scheme in the OpenAPI document: a bearer JWT (simplejwt's own extension
    matches its class only, not this subclass, so the schema offered no way to sign in)."""

    target_class = "rtv.authentication.RoleJWTAuthentication"
