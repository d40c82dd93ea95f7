"""Load the survey data contract (version ahs-2024.1) and create the role groups."""

from django.db import migrations

ROLES = ("field_officer", "reviewer", "data_manager", "data_scientist", "partner", "admin")


def forwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    from rtv.services import contract_load

    contract_load(schema_version_model=apps.get_model("rtv", "SchemaVersion"),
                  schema_field_model=apps.get_model("rtv", "SchemaField"))
    Group = apps.get_model("auth", "Group")
    for role in ROLES:
        Group.objects.get_or_create(name=role)


def backwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("rtv", "SchemaVersion").objects.filter(version="ahs-2024.1").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("rtv", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
