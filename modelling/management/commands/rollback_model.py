"""python manage.py rollback_model"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from modelling.promotion import PromotionRefused, model_rollback


class Command(BaseCommand):
    help = "Give the champion alias back to the version that held it before the last promotion."

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            mv = model_rollback(user=None)
        except PromotionRefused as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{mv.name} v{mv.version} is the champion again")
