"""Processed feature snapshots: what a model was trained on, kept as Parquet with a manifest."""

from __future__ import annotations

import uuid

from django.db import models


class FeatureSnapshot(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    purpose = models.CharField(max_length=40, default="training")
    file_key = models.CharField(max_length=400, help_text="Parquet under processed/ in storage")
    rows = models.PositiveIntegerField()
    columns = models.JSONField(default=list)
    sha256 = models.CharField(max_length=64)
    source_batches = models.JSONField(default=list, help_text="ingestion batch ids the rows came from")
    schema_version = models.ForeignKey("rtv.SchemaVersion", null=True, on_delete=models.PROTECT)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.purpose} {self.created_at:%Y-%m-%d %H:%M} ({self.rows} rows)"
