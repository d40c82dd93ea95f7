"""The data storage hierarchy (raw/ validated/ processed/ predictions/ archive/ temp/)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.files.storage import FileSystemStorage, default_storage


def ensure_local_areas() -> None:
    """Create the area folders (local file storage) and the filesystem broker's folders."""
    if isinstance(default_storage, FileSystemStorage):
        root = Path(default_storage.location)
        for area in settings.STORAGE_AREAS:
            (root / area).mkdir(parents=True, exist_ok=True)
    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
            if key in options:
                Path(str(options[key])).mkdir(parents=True, exist_ok=True)


def area_path(area: str, name: str) -> str:
    """The storage key of ``name`` inside one of the storage areas."""
    if area not in settings.STORAGE_AREAS:
        raise ValueError(f"unknown storage area {area!r}")
    return f"{area}/{name}"
