"""The ``locks_pg`` Django app: optional, for the fencing sequence's migration."""

from django.apps import AppConfig


class LocksPgConfig(AppConfig):
    name = "locks_pg"
    label = "locks_pg"
    verbose_name = "locks: PostgreSQL"
    default_auto_field = "django.db.models.AutoField"
