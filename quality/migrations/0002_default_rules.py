"""The initial rule set, derived from the survey contract and the real extract's profile."""

from django.db import migrations


def forwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    from quality.rules import rules_load_defaults

    rules_load_defaults(apps.get_model("quality", "Rule"), apps.get_model("quality", "RuleRevision"))


def backwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("quality", "Rule").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("quality", "0001_initial")]
    operations = [migrations.RunPython(forwards, backwards)]
