"""python manage.py rollback_model [--user USERNAME]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from modelling.promotion import PromotionRefused, acting_user, model_rollback


class Command(BaseCommand):
    help = "Give the champion alias back to the version that held it before the last promotion."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", help="the person this is done for (recorded on the event and the audit trail)")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            mv = model_rollback(user=acting_user(opts["user"]))
        except PromotionRefused as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{mv.name} v{mv.version} is the champion again")
