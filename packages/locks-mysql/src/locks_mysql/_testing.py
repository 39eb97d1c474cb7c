"""Django settings for tests and worker processes: a MySQL ``DATABASES['default']`` built from
``LOCKS_MYSQL_URL`` (default ``mysql://root@127.0.0.1:3306/test``), also run in spawned worker
processes (``BackendSpec.setup``). Not part of the public API (as ``locks_pg._testing``)."""

from __future__ import annotations

import os
from typing import Any

from locks.databases import database_from_url

DEFAULT_URL = "mysql://root@127.0.0.1:3306/test"


def mysql_url() -> str:
    """The test server's URL: ``LOCKS_MYSQL_URL`` or the local default."""
    return os.environ.get("LOCKS_MYSQL_URL", DEFAULT_URL)


def database_settings(url: str | None = None) -> dict[str, Any]:
    """A Django ``DATABASES`` entry for a ``mysql://`` URL (its test database is itself)."""
    entry = database_from_url(url or mysql_url(), OPTIONS={"charset": "utf8mb4"})
    entry["TEST"] = {"NAME": entry["NAME"]}
    return entry


def setup_from_environment() -> None:
    """Configure Django (once) with the test database as ``default``: the ``setup`` of the
    backend specs that lock through a ``DATABASES`` alias, run in each worker process."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "locks"],
            DATABASES={
                "default": database_settings(),
                # a database of another vendor, to check what refuses it
                "sqlite": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
            },
            USE_TZ=True,
            DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        )
        django.setup()
