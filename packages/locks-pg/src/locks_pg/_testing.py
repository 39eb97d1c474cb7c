"""Django settings for locks-pg's tests and benchmarks, also run in spawned worker processes
(``BackendSpec.setup``). Not part of the public API."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from locks_pg.backend import AdvisoryLockBackend

from locks.databases import database_from_url

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def pg_url() -> str:
    return os.environ.get("LOCKS_PG_URL", DEFAULT_URL)


def database_settings(url: str | None = None, **extra: Any) -> dict[str, Any]:
    return database_from_url(url or pg_url(), default_name="postgres", **extra)


class MakeBackend(Protocol):
    """The ``make_backend`` fixture of locks-pg's tests: an advisory lock backend on the test
    server, with these OPTIONS (closed when the test ends)."""

    def __call__(self, alias: str = "default", **options: Any) -> AdvisoryLockBackend: ...


def admin(sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """A statement on a connection of its own to the test server (the test's view from outside)."""
    import psycopg

    with psycopg.connect(pg_url(), autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def terminate(pid: int) -> None:
    """End a session and wait until it is gone (pg_terminate_backend's wait needs 14+)."""
    admin("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + 10
    while admin("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)):
        assert time.monotonic() < deadline, f"session {pid} did not end"
        time.sleep(0.02)


def configure_django(extra_databases: dict[str, Any] | None = None) -> None:
    import django
    from django.conf import settings

    if settings.configured:
        return
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "locks", "locks_pg"],
        DATABASES={"default": database_settings(), **(extra_databases or {})},
        LOCKS={
            "default": {"BACKEND": "locks_pg.AdvisoryLockBackend", "OPTIONS": {"DATABASE": "default"}},
            "xact": {
                "BACKEND": "locks_pg.TransactionAdvisoryLockBackend",
                "OPTIONS": {"DATABASE": "default"},
            },
        },
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()


def url_of_database(alias: str) -> str:
    """A libpq URL for a Django DATABASES alias (for peers that connect on their own)."""
    from urllib.parse import quote

    from django.conf import settings

    db = settings.DATABASES[alias]
    auth = quote(db.get("USER") or "")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    host = db.get("HOST") or "127.0.0.1"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgresql://{auth + '@' if auth else ''}{host}{port}/{quote(db.get('NAME') or 'postgres')}"
