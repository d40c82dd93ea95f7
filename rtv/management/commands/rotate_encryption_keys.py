"""python manage.py rotate_encryption_keys: re-encrypt every encrypted value with the first key."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import connection, transaction

from rtv.fields import EncryptedJSONField, fernet


class Command(BaseCommand):
    help = "After prepending a new key to FIELD_ENCRYPTION_KEYS, re-encrypt stored values with it."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--batch-size", type=int, default=2000)

    def handle(self, *args: Any, **opts: Any) -> None:
        f = fernet()
        total = 0
        for model in apps.get_models():
            cols = [fld for fld in model._meta.concrete_fields if isinstance(fld, EncryptedJSONField)]
            table = connection.ops.quote_name(model._meta.db_table)
            pk = connection.ops.quote_name(model._meta.pk.column)
            for fld in cols:
                col = connection.ops.quote_name(fld.column)
                last = None
                while True:
                    with transaction.atomic(), connection.cursor() as cur:
                        # Raw SQL on purpose: the ciphertext is rotated without decrypting into Python objects.
                        where = f"{col} IS NOT NULL" + (f" AND {pk} > %s" if last is not None else "")
                        cur.execute(f"SELECT {pk}, {col} FROM {table} WHERE {where} ORDER BY {pk} LIMIT %s",
                                    ([last] if last is not None else []) + [opts["batch_size"]])
                        rows = cur.fetchall()
                        if not rows:
                            break
                        cur.executemany(f"UPDATE {table} SET {col} = %s WHERE {pk} = %s",
                                        [(f.rotate(token.encode()).decode(), key) for key, token in rows])
                        total += len(rows)
                        last = rows[-1][0]
        # Device requests are kept whole, encrypted (ingestion.submissions): in the database until a
        # worker writes them under raw/.  Imported here, as the command runs after every app is loaded.
        from ingestion.submissions import device_bodies_rotate

        bodies = device_bodies_rotate(opts["batch_size"])
        self.stdout.write(f"re-encrypted {total} values and {bodies} device requests")
