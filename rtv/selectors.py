"""Reads shared by every app."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import F

from .models import SchemaField, SchemaVersion


@dataclass(frozen=True)
class Schema:
    version: SchemaVersion
    fields: tuple[SchemaField, ...]

    def by_name(self) -> dict[str, SchemaField]:
        return {f.name: f for f in self.fields}


def current_schema() -> Schema:
    """The current contract version and its fields, in source order (two queries)."""
    version = SchemaVersion.objects.get(is_current=True)
    fields = tuple(SchemaField.objects.filter(schema=version).order_by(F("source_position").asc(nulls_last=True), "id"))
    return Schema(version=version, fields=fields)
