"""Synthetic RTV survey files for demos and tests (no Django; see generator.py)."""

from ingestion.synthetic.generator import (
    ERROR_COLUMNS,
    FORMATS,
    PROFILE_PATH,
    RULES,
    errors_path,
    fit_profile,
    generate,
    load_profile,
    save_profile,
    write,
)

__all__ = [
    "ERROR_COLUMNS",
    "FORMATS",
    "PROFILE_PATH",
    "RULES",
    "errors_path",
    "fit_profile",
    "generate",
    "load_profile",
    "save_profile",
    "write",
]
