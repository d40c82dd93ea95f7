"""Roles are Django groups; permission classes read them."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

FIELD_OFFICER = "field_officer"
REVIEWER = "reviewer"
DATA_MANAGER = "data_manager"
DATA_SCIENTIST = "data_scientist"
PARTNER = "partner"
ADMIN = "admin"
ALL_ROLES = (FIELD_OFFICER, REVIEWER, DATA_MANAGER, DATA_SCIENTIST, PARTNER, ADMIN)
STAFF_ROLES = (REVIEWER, DATA_MANAGER, DATA_SCIENTIST, ADMIN)


def user_roles(user: AbstractBaseUser | AnonymousUser) -> set[str]:
    if not user.is_authenticated:
        return set()
    cached: set[str] | None = getattr(user, "_rtv_roles", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))  # type: ignore[union-attr]
        if getattr(user, "is_superuser", False):
            cached.add(ADMIN)
        user._rtv_roles = cached  # type: ignore[union-attr]
    return cached


def has_role(user: AbstractBaseUser | AnonymousUser, *roles: str) -> bool:
    return bool(user_roles(user) & set(roles))


class HasRole(BasePermission):
    """``permission_classes = [HasRole.of(DATA_MANAGER, ADMIN)]``."""

    roles: tuple[str, ...] = ()

    @classmethod
    def of(cls, *roles: str) -> type[HasRole]:
        return type(f"HasRole_{'_'.join(roles)}", (cls,), {"roles": roles})

    def has_permission(self, request: Request, view: APIView) -> bool:
        return has_role(request.user, *self.roles)
