from django.conf import settings
from django.db import migrations, models


def backfill(apps, schema_editor):
    """Hash the answers of records stored before the column existed (quality.duplicates)."""
    from quality.duplicates import backfill as run

    run(apps.get_model("ingestion", "SurveyRecord"), apps.get_model("ingestion", "SurveyValues"))


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('ingestion', '0002_batch_plan_lease'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='surveyrecord',
            name='answers_hash',
            field=models.BigIntegerField(blank=True, editable=False, help_text='hash of the survey answers (quality.duplicates): finds likely duplicates across sources', null=True),
        ),
        # Backfilled before the index is built (one build, not a million index inserts), a chunk per
        # transaction: the table is not held locked for the whole backfill.
        migrations.RunPython(backfill, migrations.RunPython.noop, atomic=False),
        migrations.AddIndex(
            model_name='surveyrecord',
            index=models.Index(condition=models.Q(('answers_hash__isnull', False)), fields=['answers_hash'], name='record_answers_set'),
        ),
    ]
