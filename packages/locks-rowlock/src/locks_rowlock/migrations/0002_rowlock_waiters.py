from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("locks_rowlock", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="rowlock",
            name="waiters",
            field=models.IntegerField(
                default=0,
                help_text="Waiters asking to be woken by the release (PostgreSQL NOTIFY): a release with none sends "
                "no notification. An estimate: a waiter that died stays counted until the row is cleaned up.",
                verbose_name="waiters",
            ),
        ),
    ]
