"""The lineage, audit and account screens of the admin are open by role, as every other screen is."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

LINEAGE = ["/admin/rtv/schemaversion/", "/admin/ingestion/household/", "/admin/ingestion/rowissue/",
           "/admin/modelling/modelevent/"]
AUDIT = ["/admin/rtv/auditevent/", "/admin/rtv/pipelinerun/"]
ACCOUNTS = ["/admin/auth/user/", "/admin/auth/group/"]


@pytest.mark.parametrize(("role", "lineage", "audit", "accounts"), [
    ("admin", 200, 200, 200),  # a member of the admin group, not a superuser
    ("data_manager", 200, 200, 403),
    ("data_scientist", 200, 403, 403),
    ("reviewer", 200, 403, 403),
])
def test_each_staff_role_opens_the_screens_its_role_allows(client, make_user, role: str, lineage: int,  # type: ignore[no-untyped-def]
                                                           audit: int, accounts: int) -> None:
    client.force_login(make_user(role))
    assert {u: client.get(u).status_code for u in LINEAGE} == dict.fromkeys(LINEAGE, lineage)
    assert {u: client.get(u).status_code for u in AUDIT} == dict.fromkeys(AUDIT, audit)
    assert {u: client.get(u).status_code for u in ACCOUNTS} == dict.fromkeys(ACCOUNTS, accounts)


def test_an_admin_gives_roles_but_only_a_superuser_makes_a_superuser(client, make_user) -> None:  # type: ignore[no-untyped-def]
    admin_user, other = make_user("admin"), make_user("reviewer")
    client.force_login(admin_user)
    page = client.get(f"/admin/auth/user/{other.pk}/change/")
    assert page.status_code == 200 and b'name="is_superuser"' not in page.content


def test_the_admin_role_cannot_take_over_a_superuser_account(client, make_user) -> None:  # type: ignore[no-untyped-def]
    """Not its password, not its active flag, not the account itself: only a superuser changes a superuser."""
    from django.contrib.auth.models import User

    root = User.objects.create_superuser("root", "root@example.org", "root-Secret-123")
    client.force_login(make_user("admin"))
    new = {"password1": "Taken-Over-987!", "password2": "Taken-Over-987!", "usable_password": "true"}
    assert client.post(f"/admin/auth/user/{root.pk}/password/", new).status_code == 403
    assert client.post(f"/admin/auth/user/{root.pk}/change/", {"username": "root", "is_active": ""}).status_code == 403
    assert client.post(f"/admin/auth/user/{root.pk}/delete/", {"post": "yes"}).status_code == 403
    root.refresh_from_db()
    assert root.check_password("root-Secret-123") and root.is_active
    other = make_user("reviewer")
    assert client.post(f"/admin/auth/user/{other.pk}/password/", new).status_code == 302  # any other account


def test_the_admin_role_names_roles_but_cannot_give_a_group_per_model_permissions(client, make_user) -> None:  # type: ignore[no-untyped-def]
    from django.contrib.auth.models import Group, Permission

    group = Group.objects.get(name="data_manager")
    scheduled = list(Permission.objects.filter(content_type__app_label="django_celery_beat").values_list("pk", flat=True))
    client.force_login(make_user("admin"))
    page = client.get(f"/admin/auth/group/{group.pk}/change/")
    assert page.status_code == 200 and b'name="permissions"' not in page.content
    client.post(f"/admin/auth/group/{group.pk}/change/", {"name": "data_manager", "permissions": scheduled})
    assert group.permissions.count() == 0
    client.force_login(make_user("data_manager"))
    assert client.get("/admin/django_celery_beat/periodictask/add/").status_code == 403
