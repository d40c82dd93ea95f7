"""python manage.py predict_batch [--all] [--chunk N] [--no-export] [--json]"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from modelling.batch import predictions_batch
from modelling.serving import NoChampion


class Command(BaseCommand):
    help = "Score every current record without a current prediction (--all: every record), by COPY, with a Parquet export."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--all", action="store_true", help="rescore every current record")
        parser.add_argument("--chunk", type=int, default=None, help="rows per chunk (RTV_PREDICT_CHUNK_ROWS)")
        parser.add_argument("--no-export", action="store_true", help="skip the Parquet export under predictions/")
        parser.add_argument("--json", action="store_true", help="print one JSON summary as the last line")

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["chunk"] is not None and opts["chunk"] < 1:
            raise CommandError(f"--chunk must be a positive number of rows, not {opts['chunk']}")
        try:
            result = predictions_batch(everything=opts["all"], chunk=opts["chunk"], export=not opts["no_export"])
        except NoChampion as exc:
            raise CommandError(str(exc)) from exc
        rate = result["scored"] / result["seconds"] if result["seconds"] else 0.0
        if opts["json"]:
            self.stdout.write(json.dumps({**result, "rows_per_s": round(rate, 1)}, default=str))
        else:
            self.stdout.write(f"{result['scored']} records scored in {result['seconds']:.1f} s ({rate:,.0f} rows/s); "
                              f"export: {result['export'] or 'none'}")
