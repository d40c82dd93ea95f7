# Findings stored before locations were withheld from them: their value held the point in clear
# text (the record keeps it encrypted).  The finding stays; its value is withheld as new ones are.

from django.db import migrations

WITHHELD = "(withheld: personal data)"
LOCATION_FIELDS = ("gps_lat", "gps_lon", "location.lat", "location.lon")


def withhold(apps, schema_editor):  # type: ignore[no-untyped-def]
    RowIssue = apps.get_model("ingestion", "RowIssue")
    RowIssue.objects.filter(field__in=LOCATION_FIELDS).exclude(value=WITHHELD).update(value=WITHHELD)


class Migration(migrations.Migration):

    dependencies = [
        ("ingestion", "0006_record_indexes_without_like"),
    ]

    operations = [
        migrations.RunPython(withhold, migrations.RunPython.noop),
    ]
