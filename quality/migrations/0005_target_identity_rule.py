"""The per-day measure checked against its nine components where the chain of totals has a gap."""

from django.db import migrations


def forwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    from quality.rules import rules_load_defaults

    rules_load_defaults(apps.get_model("quality", "Rule"), apps.get_model("quality", "RuleRevision"))


class Migration(migrations.Migration):
    dependencies = [("quality", "0004_duplicate_rules_are_warnings")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
