"""python manage.py seed_demo_users: one demo account per role, credentials printed."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser

from rtv.roles import ADMIN, ALL_ROLES, STAFF_ROLES


class Command(BaseCommand):
    help = "Create one demo user per role (local use only) and print their credentials."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--password", default="rtv-demo-2026", help="password for every demo user")

    def handle(self, *args: Any, **opts: Any) -> None:
        if "production" in settings.SETTINGS_MODULE:
            raise CommandError("demo users are for local use; refusing in production settings")
        User = get_user_model()
        self.stdout.write(f"Demo users (password for all: {opts['password']}):")
        for role in ALL_ROLES:
            group, _ = Group.objects.get_or_create(name=role)
            username = f"demo_{role}"
            user, _ = User.objects.get_or_create(username=username, defaults={"email": f"{username}@example.org"})
            user.set_password(opts["password"])
            user.is_staff = role in STAFF_ROLES
            user.is_superuser = role == ADMIN
            user.save()
            user.groups.add(group)
            self.stdout.write(f"  {role:15s} {username}")
