"""Field-level encryption on cryptography's MultiFernet (stack.md explains why not a library).

The first key in FIELD_ENCRYPTION_KEYS encrypts; every key decrypts, so keys rotate by
prepending a new one and running ``manage.py rotate_encryption_keys``.  A wrong key raises
instead of silently returning ciphertext.  Exact lookups go through a separate HMAC
"blind index" column (``blind_index``), never through the ciphertext.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings
from django.db import models


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(k) for k in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt_value(value: Any) -> str:
    return fernet().encrypt(json.dumps(value).encode()).decode()


def decrypt_value(token: str) -> Any:
    return json.loads(fernet().decrypt(token.encode()))


def blind_index(value: str) -> str:
    """A keyed hash for exact-match lookups on an encrypted value."""
    key = hashlib.sha256(("blind-index:" + settings.FIELD_ENCRYPTION_KEYS[0]).encode()).digest()
    return hmac.new(key, value.strip().lower().encode(), hashlib.sha256).hexdigest()


class EncryptedJSONField(models.TextField):
    """Stores any JSON value encrypted; None stays NULL, while 0 and "" round-trip as themselves."""

    description = "JSON value encrypted with MultiFernet"

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        if value is None:
            return None
        return decrypt_value(value)

    def to_python(self, value: Any) -> Any:
        return value

    def get_prep_value(self, value: Any) -> str | None:
        if value is None:
            return None
        return encrypt_value(value)

    def get_placeholder(self, value: Any, compiler: Any, connection: Any) -> str:
        """A plain placeholder.  Defining it also keeps Django 5.2's bulk_create on ``VALUES`` for
        models holding encrypted fields: its ``UNNEST`` strategy sends each column as an array,
        which psycopg quotes element by element in Python (~60 ms per 100 device records)."""
        return "%s"

    def get_lookup(self, lookup_name: str) -> Any:
        if lookup_name != "isnull":
            raise TypeError(f"encrypted fields support only isnull lookups, not {lookup_name!r}; use a blind index")
        return super().get_lookup(lookup_name)
