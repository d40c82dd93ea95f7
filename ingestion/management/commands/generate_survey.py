"""python manage.py generate_survey: a synthetic RTV survey file (and its injected-errors sidecar)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion.synthetic import FORMATS, errors_path, generate, write


class Command(BaseCommand):
    help = ("Write a synthetic Annual Household Survey file shaped like the real extract, with an optional "
            "share of rows carrying one known error each (listed in PATH.errors.csv).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rows", type=int, default=1000, help="number of households (default 1000)")
        parser.add_argument("--format", dest="fmt", choices=FORMATS, default=None,
                            help="file format (default: from the output's extension, else csv)")
        parser.add_argument("--bad-rate", type=float, default=0.0,
                            help="share of rows that get exactly one injected error (default 0)")
        parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same file)")
        parser.add_argument("-o", "--output", required=True, help="path of the file to write")

    def handle(self, *args: Any, **opts: Any) -> None:
        rows, bad_rate = opts["rows"], opts["bad_rate"]
        if rows < 0:
            raise CommandError("--rows must be >= 0")
        if not 0.0 <= bad_rate <= 1.0:
            raise CommandError("--bad-rate must be between 0 and 1")
        path = Path(opts["output"])
        fmt = opts["fmt"] or {"jsonl": "ndjson"}.get(path.suffix.lstrip(".").lower(), path.suffix.lstrip(".").lower())
        if fmt not in FORMATS:
            fmt = "csv"
        if fmt == "xlsx" and rows > 1_048_575:
            raise CommandError("XLSX holds at most 1,048,575 data rows")
        started = time.perf_counter()
        data, errors = generate(rows, seed=opts["seed"], bad_rate=bad_rate)
        write(data, errors, path, fmt)
        self.stdout.write(
            f"generated {len(data)} rows ({fmt}), {len(errors)} injected errors, seed {opts['seed']}, "
            f"in {time.perf_counter() - started:.1f}s -> {path} (errors: {errors_path(path)})")
