"""Django settings of locks-rowlock's tests, shared by the pytest process and the worker
processes the contract spawns (``BackendSpec.setup`` points at :func:`setup`)."""

from __future__ import annotations

import os
import socket
import tempfile
from typing import Any

from locks.databases import database_from_url

SQLITE_ENV = "LOCKS_ROWLOCK_SQLITE"
PGBOUNCER_PORT_ENV = "LOCKS_ROWLOCK_PGBOUNCER_PORT"


def sqlite_path() -> str:
    """One SQLite file per test run, the same in every worker process (through the environment)."""
    path = os.environ.get(SQLITE_ENV)
    if not path:
        path = os.environ[SQLITE_ENV] = os.path.join(tempfile.mkdtemp(prefix="locks-rowlock-"), "locks.sqlite3")
    return path


def pgbouncer_port() -> int:
    """The port of the PgBouncer the tests start, chosen once and shared with worker processes."""
    port = os.environ.get(PGBOUNCER_PORT_ENV)
    if not port:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = os.environ[PGBOUNCER_PORT_ENV] = str(probe.getsockname()[1])
    return int(port)


def databases() -> dict[str, dict[str, Any]]:
    pg_url = os.environ.get("LOCKS_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    mysql_url = os.environ.get("LOCKS_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
    return {
        # PostgreSQL through PgBouncer in transaction pooling (started by the tests' fixture).
        "pgbouncer": database_from_url(pg_url, HOST="127.0.0.1", PORT=str(pgbouncer_port())),
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": sqlite_path()},
        "pg": database_from_url(pg_url),
        "mysql": database_from_url(mysql_url),
        # Nothing listens on port 1: the "server unreachable" cases.
        "pg_down": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "test",
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": "1",
        },
        "mysql_down": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": "test",
            "USER": "root",
            "HOST": "127.0.0.1",
            "PORT": "1",
        },
        "sqlite_down": {"ENGINE": "django.db.backends.sqlite3", "NAME": "/nonexistent-dir/locks.sqlite3"},
    }


def setup() -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=[
                "django.contrib.contenttypes",
                "django.contrib.auth",
                "django.contrib.admin",
                "django.contrib.sessions",
                "django.contrib.messages",
                "locks",
                "locks_rowlock",
            ],
            DATABASES=databases(),
            USE_TZ=True,
            DEFAULT_AUTO_FIELD="django.db.models.AutoField",
            SECRET_KEY="locks-rowlock-tests",
            ALLOWED_HOSTS=["testserver"],
            ROOT_URLCONF="rowlock_test_urls",
            MIDDLEWARE=[
                "django.contrib.sessions.middleware.SessionMiddleware",
                "django.contrib.auth.middleware.AuthenticationMiddleware",
                "django.contrib.messages.middleware.MessageMiddleware",
            ],
            TEMPLATES=[
                {
                    "BACKEND": "django.template.backends.django.DjangoTemplates",
                    "APP_DIRS": True,
                    "OPTIONS": {
                        "context_processors": [
                            "django.template.context_processors.request",
                            "django.contrib.auth.context_processors.auth",
                            "django.contrib.messages.context_processors.messages",
                        ]
                    },
                }
            ],
            LOCKS={"default": {"BACKEND": "locks_rowlock.RowLockBackend", "OPTIONS": {"DATABASE": "pg"}}},
        )
        django.setup()
