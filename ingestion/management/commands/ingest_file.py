"""python manage.py ingest_file PATH [--dry-run] [--json]"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion.readers import ReadError
from ingestion.services import DuplicateFile, IngestSummary, ingest_file


class Command(BaseCommand):
    help = "Read a survey file (CSV, XLSX, JSON, NDJSON, Parquet), validate it, store the records."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path")
        parser.add_argument("--dry-run", action="store_true", help="validate and report; store no record")
        parser.add_argument("--json", action="store_true", help="print one JSON summary as the last line")
        parser.add_argument("--source", default="", help="who sent the file (partner, team...)")
        parser.add_argument("--force", action="store_true", help="ingest even if the same file was ingested before")

    def handle(self, *args: Any, **opts: Any) -> None:
        path = Path(opts["path"])
        if not path.is_file():
            raise CommandError(f"no such file: {path}")
        try:
            batch = ingest_file(path, dry_run=opts["dry_run"], source=opts["source"], force=opts["force"])
        except ReadError as exc:
            raise CommandError(f"{exc.code}: {exc}") from exc
        except DuplicateFile as exc:
            raise CommandError(f"duplicate_file: already ingested as {exc.earlier.pk} on "
                               f"{exc.earlier.created_at:%Y-%m-%d %H:%M}; use --force to ingest it again") from exc
        summary = IngestSummary(batch).as_dict()
        if opts["json"]:
            self.stdout.write(json.dumps(summary))
            return
        self.stdout.write(
            f"ingestion {summary['ingestion_id']}: {summary['rows']} rows, {summary['accepted']} accepted "
            f"({summary['warnings']} with warnings), {summary['rejected']} rejected"
            + (" [dry run: nothing stored]" if batch.dry_run else "")
        )
        for status, count in sorted(summary["label_counts"].items()):
            self.stdout.write(f"  {status}: {count}")
