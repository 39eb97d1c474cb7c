from django.apps import AppConfig


class RowLockConfig(AppConfig):
    name = "locks_rowlock"
    label = "locks_rowlock"
    verbose_name = "Locks (lock table)"
    default_auto_field = "django.db.models.AutoField"
