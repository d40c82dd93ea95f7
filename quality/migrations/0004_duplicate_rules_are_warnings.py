from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('quality', '0003_rule_kind_frequency_shift'),
    ]

    operations = [
        migrations.AddConstraint(
            model_name='rule',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('kind__in', ['duplicate_household', 'near_duplicate']), _negated=True), ('severity', 'warning'), _connector='OR'), name='duplicate_rules_are_warnings', violation_error_message='A duplicate rule is a warning: a likely duplicate is reviewed, never rejected.'),
        ),
    ]
