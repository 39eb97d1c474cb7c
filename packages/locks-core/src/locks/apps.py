from django.apps import AppConfig


class LocksConfig(AppConfig):
    """Add ``"locks"`` to INSTALLED_APPS for the ``locks`` management command and system checks."""

    name = "locks"
    verbose_name = "Locks"

    def ready(self) -> None:
        from locks import checks  # noqa: F401 - registers the checks
