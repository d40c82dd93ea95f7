"""Reads shared by every app."""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.db import connection
from django.db.models import F

from .models import SchemaField, SchemaVersion


@dataclass(frozen=True)
class Schema:
    version: SchemaVersion
    fields: tuple[SchemaField, ...]

    def by_name(self) -> dict[str, SchemaField]:
        return {f.name: f for f in self.fields}


_CACHE: dict[str, tuple[float, Schema]] = {}
SCHEMA_CACHE_SECONDS = 30.0


def current_schema(*, fresh: bool = False) -> Schema:
    """The current contract version and its fields, in source order.

    Cached per process for 30 s: every device submission needs it, and a contract version changes
    by migration, not mid-request.  ``fresh=True`` reads the database (two queries)."""
    now = time.monotonic()
    hit = _CACHE.get(connection.alias + connection.settings_dict["NAME"])
    if hit and not fresh and now - hit[0] < SCHEMA_CACHE_SECONDS:
        return hit[1]
    version = SchemaVersion.objects.get(is_current=True)
    fields = tuple(SchemaField.objects.filter(schema=version).order_by(F("source_position").asc(nulls_last=True), "id"))
    schema = Schema(version=version, fields=fields)
    _CACHE[connection.alias + connection.settings_dict["NAME"]] = (now, schema)
    return schema


def forget_schema() -> None:
    _CACHE.clear()
