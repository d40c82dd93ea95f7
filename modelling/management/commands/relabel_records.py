"""python manage.py relabel_records [--user USERNAME]"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from modelling.promotion import PromotionRefused, acting_user
from modelling.services import records_relabel


class Command(BaseCommand):
    help = ("Recompute every record's progress status and vulnerable flag with the thresholds configured now "
            "(run after changing RTV_THRESHOLD_*); audited.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", help="the person this is done for (recorded on the audit trail)")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            user = acting_user(opts["user"])
        except PromotionRefused as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(json.dumps(records_relabel(user=user)))
