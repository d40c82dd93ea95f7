"""python manage.py promote_model VERSION [--force] [--user USERNAME]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from modelling.promotion import PromotionRefused, acting_user, model_promote


class Command(BaseCommand):
    help = "Make a registered version the champion, if it passes the promotion gate (or --force)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("version", type=int)
        parser.add_argument("--force", action="store_true", help="promote even if the gate refuses (recorded)")
        parser.add_argument("--user", help="the person this is done for (recorded on the event and the audit trail)")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            mv = model_promote(version=opts["version"], user=acting_user(opts["user"]), force=opts["force"])
        except PromotionRefused as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{mv.name} v{mv.version} is the champion")
