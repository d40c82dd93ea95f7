"""Write a processed snapshot: the exact rows a model sees, with a manifest in the database."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from rtv.selectors import current_schema
from rtv.storage import area_path

from .models import FeatureSnapshot


def snapshot_write(frame: pd.DataFrame, *, source_batches: Sequence[str], purpose: str = "training") -> FeatureSnapshot:
    """Store ``frame`` (record ids, model inputs, label) as Parquet under processed/ and record its
    manifest (rows, columns, sha256 of the file, source batches, schema version)."""
    frame = frame.copy(deep=False)
    frame.attrs = {}  # in-memory annotations (labels, ids) are not part of the file
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buf, compression="zstd")
    data = buf.getvalue()
    snap = FeatureSnapshot(purpose=purpose, rows=len(frame), columns=[str(c) for c in frame.columns],
                           sha256=hashlib.sha256(data).hexdigest(), source_batches=sorted(set(source_batches)),
                           schema_version=current_schema().version)
    snap.file_key = default_storage.save(area_path("processed", f"{purpose}-{snap.id}.parquet"), ContentFile(data))
    snap.save(force_insert=True)
    return snap


def snapshot_read(snap: FeatureSnapshot) -> pd.DataFrame:
    with default_storage.open(snap.file_key, "rb") as fh:
        return pq.read_table(io.BytesIO(fh.read())).to_pandas()


def snapshot_record_ids(snap: FeatureSnapshot) -> list[int] | None:
    """The record ids a snapshot holds (only that column is read); None for one without them."""
    if "record_id" not in snap.columns:
        return None
    with default_storage.open(snap.file_key, "rb") as fh:
        column = pq.read_table(io.BytesIO(fh.read()), columns=["record_id"]).column("record_id")
    return [int(v) for v in column.to_pylist() if v is not None]
