"""python manage.py evaluate_retraining [--manual] [--no-queue]"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from modelling.triggers import retrain_triggers_evaluate


class Command(BaseCommand):
    help = "Evaluate the retraining triggers (new samples, degradation, drift, schedule, manual); queue training."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--manual", action="store_true", help="fire the manual trigger")
        parser.add_argument("--no-queue", action="store_true", help="decide and record, but queue nothing")

    def handle(self, *args: Any, **opts: Any) -> None:
        d = retrain_triggers_evaluate(manual=opts["manual"], enqueue=not opts["no_queue"])
        self.stdout.write(json.dumps({"fired": d.fired, "retrain_queued": d.retrain_queued, "inputs": d.inputs},
                                     default=str))
