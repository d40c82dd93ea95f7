# Record indexes that storing pays for and no query uses: the LIKE-pattern copies of district and
# village, and district itself (four values). Village keeps a plain index.

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('ingestion', '0005_chunk_summary'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name='surveyrecord',
            name='district',
            field=models.CharField(max_length=64),
        ),
        migrations.AlterField(
            model_name='surveyrecord',
            name='village',
            field=models.CharField(max_length=120),
        ),
        migrations.AddIndex(
            model_name='surveyrecord',
            index=models.Index(fields=['village'], name='record_village'),
        ),
    ]
