from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import AuditEvent, PipelineRun, SchemaField, SchemaVersion
from .roles import ADMIN, DATA_MANAGER, STAFF_ROLES, has_role


class RoleAdmin(admin.ModelAdmin):
    """Admin screens scoped by role, not by per-model permission rows (which no role's group holds):
    who may see, change, add and delete, each a tuple of roles (none: nobody)."""

    see: tuple[str, ...] = ()
    edit: tuple[str, ...] = ()
    add: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()

    def has_module_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, *self.see)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, *self.see)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, *self.edit)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, *self.add)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, *self.delete)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Lineage and audit tables are written by services only; seen by role (``see``), like the
    other screens: no role's group holds Django's per-model permission rows."""

    see: tuple[str, ...] = STAFF_ROLES

    def has_module_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, *self.see)

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return has_role(request.user, *self.see)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class SchemaFieldInline(admin.TabularInline):
    model = SchemaField
    extra = 0
    can_delete = False
    fields = ("source_position", "name", "source_header", "type", "unit", "role", "required", "allowed", "min_value",
              "max_value", "pii")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(SchemaVersion)
class SchemaVersionAdmin(ReadOnlyAdmin):
    list_display = ("version", "is_current", "created_at")
    inlines = [SchemaFieldInline]


@admin.register(SchemaField)
class SchemaFieldAdmin(ReadOnlyAdmin):
    list_display = ("name", "source_header", "source_position", "type", "unit", "role", "required", "pii", "schema")
    list_filter = ("schema", "role", "type", "pii", "required")
    search_fields = ("name", "source_header", "description")
    list_select_related = ("schema",)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    see = (ADMIN, DATA_MANAGER)  # who did what to whom: not every reviewer's reading
    list_display = ("created_at", "actor_label", "action", "object_type", "object_id", "request_id")
    list_filter = ("action", "object_type")
    search_fields = ("object_id", "actor_label", "request_id")


@admin.register(PipelineRun)
class PipelineRunAdmin(ReadOnlyAdmin):
    see = (ADMIN, DATA_MANAGER)
    list_display = ("job", "status", "started_at", "finished_at", "correlation_id")
    list_filter = ("job", "status")


# ---- accounts and roles: the admin role manages them (per-model permission rows are not how roles work here)
from django.contrib.auth.admin import GroupAdmin, UserAdmin  # noqa: E402
from django.contrib.auth.models import Group, User  # noqa: E402


class _AdminsManage:
    def has_module_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, ADMIN)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, ADMIN)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, ADMIN)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, ADMIN)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, ADMIN)


def _superuser(request: HttpRequest) -> bool:
    return bool(getattr(request.user, "is_superuser", False))


class RoleUserAdmin(_AdminsManage, UserAdmin):  # type: ignore[type-arg]
    """Accounts and their roles (groups), managed by the admin role; only a superuser makes a
    superuser, grants per-model permissions, or changes a superuser's account (its password,
    whether it is active): otherwise the admin role could take over the account above it."""

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))
        return fields if _superuser(request) else (*fields, "is_superuser", "user_permissions")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_superuser and not _superuser(request):
            return False  # the password form asks this too: a 403 there
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_superuser and not _superuser(request):
            return False
        return super().has_delete_permission(request, obj)


class RoleGroupAdmin(_AdminsManage, GroupAdmin):
    """Roles are groups by name; what a group may do is the role's, in code.  Per-model permission
    rows on a group would open screens (scheduled tasks, token lists) to a role that must not
    have them, so only a superuser edits them."""

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))
        return fields if _superuser(request) else (*fields, "permissions")


admin.site.unregister(User)
admin.site.register(User, RoleUserAdmin)
admin.site.unregister(Group)
admin.site.register(Group, RoleGroupAdmin)
