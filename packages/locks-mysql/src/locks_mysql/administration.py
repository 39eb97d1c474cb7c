"""Listing and force release for the MySQL lock backend: who holds what, read from the server's
lock tables, and ``KILL`` to break a hold.

User locks are listed from ``information_schema.METADATA_LOCK_INFO`` on MariaDB (the
``metadata_lock_info`` plugin) and ``performance_schema.metadata_locks`` on MySQL; both need
read access that an application user may lack, which is reported as
:class:`~locks.exceptions.NotSupported`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from locks.backends import HolderInfo
from locks.exceptions import BackendUnavailable, LockError, NotSupported
from locks.keys import HASH_MARKER, KeySpec, LockName
from locks_mysql import connection as mysql

if TYPE_CHECKING:
    from locks.keys import Key
    from locks_mysql.connection import Session


class Administration:
    """The listing and force-release primitives of :class:`~locks_mysql.UserLockBackend`."""

    if TYPE_CHECKING:
        key_spec: ClassVar[KeySpec]

        @property
        def where(self) -> str: ...
        @property
        def namespace(self) -> str: ...
        def validate_name(self, name: object) -> LockName: ...
        def make_key(self, name: LockName) -> Key: ...
        def _checkout(self) -> Session: ...
        def _checkin(self, session: Session) -> None: ...
        def _admin(self, sql: str, many: bool = False) -> Any: ...

    def holders(self, prefix: str | None = None) -> list[HolderInfo]:
        """Held locks of this namespace: from ``information_schema.METADATA_LOCK_INFO`` on
        MariaDB (the ``metadata_lock_info`` plugin) or ``performance_schema.metadata_locks`` on
        MySQL. A hashed name is listed by key (``name`` is ``None``); ``prefix`` matches it by
        its readable stem."""
        session = self._checkout()
        try:
            rows = self._listing_rows(session)
        except mysql.driver().Error as exc:
            session.close()
            if mysql.is_disconnect(exc):
                raise BackendUnavailable(f"MySQL at {self.where} dropped the connection: {exc}") from exc
            if mysql.error_code(exc) in (1044, 1142, 1227):  # access denied
                raise NotSupported(
                    f"listing user locks needs read access to the server's lock tables "
                    f"(performance_schema on MySQL, information_schema on MariaDB): {exc}"
                ) from exc
            raise LockError(f"listing user locks failed: {exc}") from exc
        finally:
            self._checkin(session)
        namespace = self.namespace
        found = []
        for connection_id, key, held_ms, client, pid in rows:
            key = key.decode() if isinstance(key, bytes) else str(key)
            if not key.startswith(namespace):
                continue
            rest = key[len(namespace) :]
            hashed = HASH_MARKER in rest
            name = None if hashed else rest
            if prefix is not None and not _matches(prefix, rest, hashed, self.key_spec):
                continue
            client = client.decode() if isinstance(client, bytes) else client
            pid = pid.decode() if isinstance(pid, bytes) else pid
            found.append(
                HolderInfo(
                    key=key,
                    name=name,
                    owner=f"connection {connection_id}" + (f" from {client}" if client else ""),
                    pid=int(pid) if pid and str(pid).isdigit() else None,
                    host=client.rsplit(":", 1)[0] if client else None,
                    since=None if held_ms is None else time.time() - float(held_ms) / 1000,
                    extra={"connection_id": int(connection_id), "hashed": hashed},
                )
            )
        return found

    def _listing_rows(self, session: Session) -> tuple[tuple[Any, ...], ...]:
        error = mysql.driver().Error
        if session.mariadb:
            try:
                return session.rows(
                    "SELECT m.THREAD_ID, m.TABLE_SCHEMA, m.LOCK_TIME_MS, p.HOST, NULL"
                    " FROM information_schema.METADATA_LOCK_INFO m"
                    " LEFT JOIN information_schema.PROCESSLIST p ON p.ID = m.THREAD_ID"
                    " WHERE m.LOCK_TYPE = 'User lock'"
                )
            except error as exc:
                if mysql.error_code(exc) in (1109, 1146):  # unknown table: the plugin is not loaded
                    raise NotSupported(
                        "listing user locks on MariaDB needs the metadata_lock_info plugin: run "
                        "INSTALL SONAME 'metadata_lock_info' (or add plugin_load_add = metadata_lock_info "
                        "to the server's configuration)"
                    ) from exc
                raise
        (enabled,) = session.row("SELECT @@performance_schema")
        if not enabled:
            raise NotSupported("listing user locks on MySQL needs performance_schema = ON (the server's default)")
        return session.rows(
            "SELECT t.PROCESSLIST_ID, m.OBJECT_NAME, NULL, t.PROCESSLIST_HOST, a.ATTR_VALUE"
            " FROM performance_schema.metadata_locks m"
            " JOIN performance_schema.threads t ON t.THREAD_ID = m.OWNER_THREAD_ID"
            # the client library sends its process id as the connection attribute _pid
            " LEFT JOIN performance_schema.session_connect_attrs a"
            " ON a.PROCESSLIST_ID = t.PROCESSLIST_ID AND a.ATTR_NAME = '_pid'"
            " WHERE m.OBJECT_TYPE = 'USER LEVEL LOCK' AND m.LOCK_STATUS = 'GRANTED'"
        )

    def force_release(self, name: LockName) -> int:
        """Break a held lock by ending its holder's connection (``KILL``): every lock that
        connection holds is released and its holder gets :class:`~locks.exceptions.LockLost`.
        Needs the ``CONNECTION_ADMIN`` (MySQL) or ``CONNECTION ADMIN``/``SUPER`` (MariaDB)
        privilege unless the holder connected as the same user."""
        key = self.make_key(self.validate_name(name))
        (holder,) = self._admin(f"SELECT IS_USED_LOCK('{key}')")
        if holder is None:
            return 0
        try:
            self._admin(f"KILL CONNECTION {int(holder)}")
        except mysql.driver().Error as exc:
            code = mysql.error_code(exc)
            if code == 1094:  # unknown thread: it ended meanwhile
                return 0
            if code in (1095, 1227):
                raise NotSupported(
                    f"{name!r} is held by connection {holder}, which this user may not KILL: {exc}", name
                ) from exc
            raise
        # KILL is asynchronous: wait (briefly) until the server has let the lock go.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            (now,) = self._admin(f"SELECT IS_USED_LOCK('{key}')")
            if now != holder:
                break
            time.sleep(0.005)
        return 1


def _matches(prefix: str, rest: str, hashed: bool, key_spec: KeySpec) -> bool:
    if not hashed:
        return rest.startswith(prefix)
    # A hashed key keeps a readable stem: the first characters of the name, unsafe ones as "_".
    stem = rest.split(HASH_MARKER, 1)[0]
    wanted = "".join(c if c in key_spec.safe_chars else "_" for c in prefix).lower()
    return stem.startswith(wanted[: len(stem)]) if len(wanted) > len(stem) else stem.startswith(wanted)
