"""The sequence fencing tokens are drawn from. The backend also creates it when missing, if its
role may; this migration is for deployments where the application role may not. It does nothing
on databases that are not PostgreSQL."""

from typing import Any

from django.db import migrations

SEQUENCE = "locks_pg_fencing_token"


def create(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"CREATE SEQUENCE IF NOT EXISTS {SEQUENCE} AS bigint")


def drop(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP SEQUENCE IF EXISTS {SEQUENCE}")


class Migration(migrations.Migration):
    initial = True
    operations = [migrations.RunPython(create, drop, elidable=False)]
