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
