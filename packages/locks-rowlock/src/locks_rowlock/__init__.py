"""locks-rowlock: leases in a lock table, on any Django database (PostgreSQL, MySQL/MariaDB,
SQLite), for ``locks``.

Add ``"locks_rowlock"`` to ``INSTALLED_APPS``, run ``migrate``, then::

    LOCKS = {"default": {"BACKEND": "locks_rowlock.RowLockBackend", "OPTIONS": {"DATABASE": "default"}}}
"""

from __future__ import annotations

from locks_rowlock.backend import RowLockBackend

__all__ = ["RowLockBackend", "setup_django"]


def setup_django() -> None:
    """Configure Django in a worker process (``BackendSpec.setup``) from ``DJANGO_SETTINGS_MODULE``."""
    import django
    from django.apps import apps
    from django.conf import settings

    if not settings.configured and not __import__("os").environ.get("DJANGO_SETTINGS_MODULE"):
        return
    if not apps.ready:
        django.setup()
