"""Connections the backend owns: Django database wrappers built from a ``DATABASES`` entry (or a
URL), never the caller's connection.

A lock row written on the caller's connection would be invisible to others until the caller
commits, undone by the caller's rollback, and lost with Django's connection recycling. The
backend's own connections run each statement in autocommit; they are pooled (one thread uses a
connection at a time) and Django's request cycle never closes them.
"""

from __future__ import annotations

import asyncio
import copy
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured

from locks.databases import database_from_url

T = TypeVar("T")

#: The URL schemes: ``rowlock+`` and a scheme of :func:`locks.databases.database_from_url`.
URL_SCHEMES = ("rowlock+postgresql", "rowlock+postgres", "rowlock+mysql", "rowlock+mariadb", "rowlock+sqlite")
#: Connections a forked child inherited from its parent: see ``_check_pid``.
_INHERITED: list[Any] = []
_IDLE_MAX = 8


def off_loop(func: Callable[[], T]) -> T:
    """Call ``func`` (Django's connect or close) outside any running event loop.

    Django refuses those calls in a thread that runs an event loop; sync lock calls made from
    async code (a quick ``is_locked`` in a coroutine) reach here, so they run in a helper thread.
    """
    if asyncio._get_running_loop() is None:
        return func()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="locks-rowlock-connect") as pool:
        return pool.submit(func).result()


def ensure_django_settings() -> None:
    """Outside a Django project (``locks.connect(url)``, the CLI), Django's database layer still
    needs settings: configure the minimum once."""
    import django
    from django.apps import apps
    from django.conf import settings

    if not settings.configured:
        try:
            settings.configure(USE_TZ=True, DATABASES={})
        except RuntimeError:  # configured meanwhile by another thread
            return
        if not apps.ready:
            django.setup()


def settings_from_url(url: str) -> dict[str, Any]:
    """The ``DATABASES`` entry of a ``rowlock+<vendor>://`` URL (its query is the backend's:
    options, and parameters for the driver, which :func:`own_settings` adds)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in URL_SCHEMES:
        raise ValueError(f"{url!r}: the lock-table backend takes {', '.join(URL_SCHEMES)} URLs")
    return database_from_url(urlunsplit(parts._replace(scheme=scheme.removeprefix("rowlock+"), query="")))


def vendor_of_alias(alias: str) -> str | None:
    """The vendor (``"postgresql"``...) of a ``DATABASES`` entry, read from its ``ENGINE`` without
    connecting; ``None`` when there is no such entry (yet) or its engine does not import."""
    from django.conf import settings
    from django.db.utils import load_backend

    if not settings.configured or alias not in settings.DATABASES:
        return None
    engine = settings.DATABASES[alias].get("ENGINE")
    if not engine:
        return None
    try:
        vendor: str = load_backend(engine).DatabaseWrapper.vendor
    except ImproperlyConfigured:  # an engine that does not import: building the backend says so
        return None
    return vendor


def own_settings(base: Mapping[str, Any], driver_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of a ``DATABASES`` entry fit for the backend's own connections."""
    from django.db.utils import ConnectionHandler

    entry = copy.deepcopy(dict(base))
    entry.setdefault("OPTIONS", {})
    options = entry["OPTIONS"] = {**entry["OPTIONS"], **(driver_options or {})}
    engine = entry.get("ENGINE", "")
    # Our statements are one per transaction: no connection pool of Django's, no persistent
    # connection policy, autocommit always.
    options.pop("pool", None)
    entry["AUTOCOMMIT"] = True
    entry["CONN_MAX_AGE"] = None
    entry["CONN_HEALTH_CHECKS"] = False
    entry["ATOMIC_REQUESTS"] = False
    if "postgresql" in engine:
        options.setdefault("connect_timeout", 10)
    elif "mysql" in engine:
        from MySQLdb.constants import CLIENT

        # Affected rows must count changed rows: that is how an upsert says whether it took the
        # lock (see MySQLDialect). Keep the caller's other flags.
        options["client_flag"] = int(options.get("client_flag", 0)) & ~CLIENT.FOUND_ROWS
        options.setdefault("connect_timeout", 10)
        options.setdefault("charset", "utf8mb4")
        options["isolation_level"] = "read committed"  # no gap locks on the lock table
    elif "sqlite" in engine:
        name = str(entry.get("NAME", ""))
        if not name or name == ":memory:" or "mode=memory" in name:
            raise ImproperlyConfigured(
                "the lock-table backend needs a SQLite file database: an in-memory database is private to "
                "one connection, so its locks would exclude nobody"
            )
        options.setdefault("timeout", 10)
    # Fill in Django's defaults (TIME_ZONE, TEST...), as DATABASES entries get them.
    handler = ConnectionHandler({"default": entry})
    return handler.settings["default"]  # type: ignore[no-any-return]


class ConnectionPool:
    """Idle connections of the backend, handed to one thread at a time."""

    def __init__(self, settings: dict[str, Any], alias: str) -> None:
        from django.db.utils import load_backend

        self.settings = settings
        self.alias = alias
        self._backend = load_backend(settings["ENGINE"])
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.vendor: str = self._backend.DatabaseWrapper.vendor

    def new(self) -> Any:
        """A new Django database wrapper, not connected yet (connect with ``ensure_connection``)."""
        wrapper = self._backend.DatabaseWrapper(copy.deepcopy(self.settings), self.alias)
        wrapper.inc_thread_sharing()  # handed from thread to thread, one at a time
        return wrapper

    def get(self) -> tuple[Any, bool]:
        """A wrapper for this thread's use (give it back with ``put`` or ``discard``), and whether
        it is a reused one (a reused connection may have died while idle)."""
        self._check_pid()
        with self._lock:
            wrapper = self._idle.pop() if self._idle else None
        if wrapper is None:
            return self.new(), False
        return wrapper, True

    def put(self, wrapper: Any) -> None:
        if wrapper.connection is None:
            return
        with self._lock:
            if len(self._idle) < _IDLE_MAX:
                self._idle.append(wrapper)
                return
        self.discard(wrapper)

    @staticmethod
    def discard(wrapper: Any) -> None:
        try:
            off_loop(wrapper.close)
        except Exception:  # noqa: BLE001 - a broken connection may fail to close
            pass

    def _check_pid(self) -> None:
        # A forked child must not use (or close: that would end the parent's session) the
        # parent's connections: forget them.
        if self._pid != os.getpid():
            # Kept referenced, never freed: freeing a MySQLdb connection sends COM_QUIT on the
            # socket the child shares with its parent, which ends the parent's session.
            _INHERITED.extend(self._idle)
            self._idle = []
            self._lock = threading.Lock()
            self._pid = os.getpid()

    def close(self) -> None:
        self._check_pid()
        with self._lock:
            idle, self._idle = self._idle, []
        for wrapper in idle:
            self.discard(wrapper)
