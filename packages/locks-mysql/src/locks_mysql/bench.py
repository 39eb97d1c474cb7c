"""Peers measured beside the MySQL backend by ``locks bench --peers``: the raw mysqlclient floor
and django-mysql's ``Lock``, on the same server and database."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from locks.backends import BaseLockBackend, BenchSubject

if TYPE_CHECKING:
    pass

#: A wait "forever" for peers (MariaDB answers ``GET_LOCK(name, -1)`` with NULL at once).
FOREVER = 31_536_000


def peers(backend: BaseLockBackend) -> list[BenchSubject]:
    """The raw mysqlclient floor, then django-mysql's ``Lock`` where installed."""
    from locks_mysql.backend import UserLockBackend

    if not isinstance(backend, UserLockBackend):
        return []
    params = {k: v for k, v in backend._params().items() if k not in ("conv",)}
    found = [BenchSubject("raw mysqlclient GET_LOCK", "locks_mysql.bench.RawGetLock", {"params": params}, floor=True)]
    try:
        import django_mysql  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return found
    found.append(BenchSubject("django-mysql Lock", "locks_mysql.bench.DjangoMysqlLock", {"params": params}))
    return found


class RawGetLock:
    """The floor: one mysqlclient connection, ``SELECT GET_LOCK`` and ``SELECT RELEASE_LOCK``
    through the driver's lowest-level calls (no cursor), names used as they are."""

    def __init__(self, params: dict[str, Any]) -> None:
        import MySQLdb  # type: ignore[import-untyped,unused-ignore]

        self.conn: Any = MySQLdb.connect(**params)  # the stubs leave its methods untyped
        self.database = params.get("db") or ""

    def _scalar(self, sql: str) -> Any:
        self.conn.query(sql)
        return self.conn.store_result().fetch_row()[0][0]

    def acquire(self, name: str) -> None:
        literal = self.conn.literal(f"{self.database}.{name}").decode()
        while self._scalar(f"SELECT GET_LOCK({literal}, {FOREVER})") != 1:
            pass

    def release(self, name: str) -> None:
        literal = self.conn.literal(f"{self.database}.{name}").decode()
        self._scalar(f"SELECT RELEASE_LOCK({literal})")

    def close(self) -> None:
        self.conn.close()


def configure_django(params: dict[str, Any]) -> None:
    """Django settings with ``default`` pointing where ``params`` do (in a bench worker)."""
    import django
    from django.conf import settings

    if settings.configured:
        return
    options = {k: v for k, v in params.items() if k in ("unix_socket", "charset", "ssl", "read_default_file")}
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.mysql",
                "NAME": params.get("db", ""),
                "USER": params.get("user", ""),
                "PASSWORD": params.get("passwd", ""),
                "HOST": params.get("host", ""),
                "PORT": str(params.get("port", "")),
                "OPTIONS": options,
            }
        },
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()


class DjangoMysqlLock:
    """``django_mysql.locks.Lock`` (GET_LOCK on Django's own connection), one object per name."""

    def __init__(self, params: dict[str, Any]) -> None:
        configure_django(params)
        self.locks: dict[str, Any] = {}

    def acquire(self, name: str) -> None:
        from django_mysql.locks import Lock  # type: ignore[import-not-found,unused-ignore]

        lock = self.locks.get(name)
        if lock is None:
            lock = self.locks[name] = Lock(name, acquire_timeout=FOREVER)
        lock.acquire()

    def release(self, name: str) -> None:
        self.locks[name].release()

    def close(self) -> None:
        from django.db import connections

        connections.close_all()
