"""The lock table outside migrations: created on first use by backends built from a URL, whose
database is not in ``DATABASES`` (an alias's table comes from ``migrate``)."""

from __future__ import annotations

from typing import Any

from locks_rowlock.dialects import TABLE


def create_table(wrapper: Any) -> None:
    """Create the lock table on a connection (for URL-built backends, outside migrations)."""
    from django.apps import apps

    if apps.ready and apps.is_installed("locks_rowlock"):
        from locks_rowlock.models import RowLock

        model: Any = RowLock
    else:
        model = unregistered_model()
    # Not atomic: Django's atomic() looks the connection up by alias, and ours is not in DATABASES.
    try:
        with wrapper.schema_editor(atomic=False) as editor:
            editor.create_model(model)
    except Exception:
        if TABLE not in wrapper.introspection.table_names():
            raise  # not a race with another process creating it


def unregistered_model() -> Any:
    """The lock model in a private app registry, for when the app is not installed (the same
    columns as :class:`locks_rowlock.models.RowLock`: a test keeps them in step)."""
    from django.apps.registry import Apps
    from django.db import models

    meta = type("Meta", (), {"db_table": TABLE, "app_label": "locks_rowlock", "apps": Apps()})
    attrs: dict[str, Any] = {
        "__module__": __name__,
        "Meta": meta,
        "digest": models.CharField(max_length=64, primary_key=True),
        "lock_key": models.CharField(max_length=255),
        "name": models.TextField(),
        "host": models.CharField(max_length=255, blank=True, default=""),
        "pid": models.IntegerField(null=True, blank=True),
        "thread": models.CharField(max_length=255, blank=True, default=""),
        "owner_uuid": models.CharField(max_length=32, blank=True, default=""),
        "version": models.BigIntegerField(default=0),
        "acquired_at": models.DateTimeField(null=True, blank=True),
        "expires_at": models.DateTimeField(null=True, blank=True, db_index=True),
        "waiters": models.IntegerField(default=0),
    }
    return type("RowLock", (models.Model,), attrs)
