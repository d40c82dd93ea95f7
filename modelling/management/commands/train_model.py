"""python manage.py train_model [--json]"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from features.pipeline import LeakageError
from modelling.batch import predictions_batch
from modelling.services import NotEnoughData, model_train


class Command(BaseCommand):
    help = "Train a leak-free vulnerability model, register it in MLflow and score the stored records."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print one JSON summary as the last line")
        parser.add_argument("--no-score", action="store_true", help="do not score the stored records with the champion")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            mv = model_train()
        except (NotEnoughData, LeakageError) as exc:
            raise CommandError(str(exc)) from exc
        scored = 0 if opts["no_score"] else predictions_batch()["scored"]
        metrics = {k: v for k, v in mv.metrics.items() if not isinstance(v, dict)}
        summary = {"model": mv.name, "version": mv.version, "algorithm": mv.algorithm, "aliases": mv.aliases,
                   "rows": mv.training_rows, "scored": scored, "metrics": metrics}
        if opts["json"]:
            self.stdout.write(json.dumps(summary))
        else:
            self.stdout.write(f"{mv.name} v{mv.version} ({mv.algorithm}) trained on {mv.training_rows} records; "
                              f"CV ROC-AUC {metrics['roc_auc']:.3f}, Brier {metrics['brier']:.3f}; "
                              f"aliases {', '.join(mv.aliases)}; {scored} records scored")
