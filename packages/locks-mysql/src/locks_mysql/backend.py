"""MySQL and MariaDB user locks: ``GET_LOCK`` / ``RELEASE_LOCK`` on connections the backend owns.

Sessions. A user lock belongs to a server session and dies with it, so the backend opens its own
connections (never Django's, which Django closes and recycles) and keeps idle ones in a small pool.
All the locks one thread holds at a time live on one session, and that thread's next wait runs on
it too: the server then sees the whole wait-for graph and answers a lock-order deadlock with an
error (MySQL ``ER_USER_LOCK_DEADLOCK``, MariaDB ``ER_LOCK_DEADLOCK``), raised here as
:class:`LockDeadlock` instead of two threads waiting out their timeouts. The async API holds each
lock on a session of its own (its waits run in worker threads that many tasks share). A session
never takes the same name twice, because ``locks`` counts reentrancy before the server is asked,
so the servers' own counting (which MySQL and MariaDB both do) never shows.

Names. ``GET_LOCK`` names are server-wide: keys are namespaced by database (``<db>.<name>``, the
same as django-mysql's for lower-case names), at most 64 characters, and hashed when longer, when
not made of safe characters, or when upper-case (MySQL folds case, MariaDB does not: hashing
makes both behave alike).

Round trips. Acquiring is one ``SELECT`` that also draws the fencing token; releasing is one
``SELECT RELEASE_LOCK``. Waiting happens on the server, so the release wakes the next waiter.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import weakref
from _thread import get_ident
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from locks.backends import (
    FENCING,
    FORCE_RELEASE,
    LISTING,
    NOTIFY,
    SESSION_BOUND,
    WATCHDOG,
    BaseLockBackend,
    Hold,
    LockRequest,
)
from locks.exceptions import BackendUnavailable, LockError, LockLost, NotSupported
from locks.keys import SAFE_CHARS, Key, KeySpec, LockName, make_key
from locks_mysql import connection as mysql
from locks_mysql.administration import Administration
from locks_mysql.connection import Session
from locks_mysql.options import (
    MYSQL_OPTIONS,
    MYSQLCLIENT_KEYWORDS,
    OLD_SPELLINGS,
    driver_arguments,
    url_params,
    warn_old_spellings,
)

__all__ = ["LockDeadlock", "UserLockBackend"]

#: The longest wait sent to the server in one statement (a wait "forever" repeats it).
FOREVER_SLICE = 86_400
#: MySQL waits whole seconds: the last fraction of a timeout is spent polling this often (the
#: last pause ends at the deadline, followed by one last attempt).
MYSQL_POLL = 0.01
#: The longest namespace (``<db>.<KEY_PREFIX>``) kept readable; a longer one is hashed.
NAMESPACE_MAX = 23

# Connections a forked child inherited but could not detach from the parent's sockets: kept
# referenced forever, since collecting one would send COM_QUIT and end the parent's session.
_inherited: list[Session] = []


class LockDeadlock(LockError):
    """The server refused a wait that would deadlock: this thread holds a lock that the holder
    of the requested one is waiting for. Release your locks and retry, or take them in one order."""


class UserLockBackend(Administration, BaseLockBackend):
    """Locks with MySQL's and MariaDB's ``GET_LOCK``.

    ``LOCATION``: ``mysql://user:password@host:3306/database`` (``mariadb://`` too). Without it,
    ``OPTIONS['DATABASE']`` names a Django ``DATABASES`` alias (default ``"default"``) whose
    connection settings are used for connections this backend opens itself.

    ``OPTIONS``: :data:`~locks_mysql.options.MYSQL_OPTIONS` (keys in any case; the old
    lower-case spellings warn), and mysqlclient's connection keywords
    (:data:`~locks_mysql.options.MYSQLCLIENT_KEYWORDS`: ``charset``, ``ssl``, ``init_command``...),
    passed through; any other key is refused.
    """

    OPTIONS = MYSQL_OPTIONS
    driver_name = "mysqlclient"

    capabilities = frozenset({FENCING, LISTING, FORCE_RELEASE, SESSION_BOUND, NOTIFY, WATCHDOG})
    key_spec = KeySpec(kind="text", max_length=64, case_insensitive=True)
    watchdog_interval = 2.0
    #: Whether MariaDB is sent fractional timeouts (MySQL always gets whole seconds and polls
    #: the last fraction); False makes MariaDB behave as MySQL does (tests use it).
    fractional_waits: bool = True
    #: Async waits run in worker threads in slices of this length (MySQL waits whole seconds).
    async_wait_slice: ClassVar[float] = 1.0

    def __init__(
        self, alias: str = "default", location: str | None = None, options: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(alias, location, options)
        settings = self.settings
        self._url_params = url_params(location, settings["DATABASE"])
        self.database_alias: str | None = None if location is not None else settings["DATABASE"] or "default"
        self.max_idle: int = settings["MAX_IDLE"]
        extra = driver_arguments(settings, self.options)
        # A server wait must end before the client's read_timeout gives up on the connection
        # (which would end the session, and every lock the thread holds on it).
        read_timeout = extra.get("read_timeout")
        self.wait_slice: float = FOREVER_SLICE if read_timeout is None else read_timeout * 0.8
        # The timeout argument of a wait without deadline, when both servers read it alike.
        self._forever: str | None = str(int(self.wait_slice)) if self.wait_slice >= 1 else None
        wait_timeout = settings["WAIT_TIMEOUT"]
        #: Not a mysqlclient argument: the session's ``wait_timeout``, set once per new connection.
        self.session_wait_timeout: int | None = None if wait_timeout is None else max(1, math.ceil(wait_timeout))
        self._extra = extra
        self._params_cache: dict[str, Any] | None = None
        self._namespace_cache: str | None = None
        self._idle: list[Session] = []
        # thread ident → the session holding that thread's locks (only that thread changes it)
        self._threads: dict[int, Session] = {}
        self._sessions: weakref.WeakSet[Session] = weakref.WeakSet()

    @classmethod
    def driver_options(cls) -> frozenset[str]:
        return MYSQLCLIENT_KEYWORDS

    @classmethod
    def parse_options(
        cls, options: Mapping[str, Any] | None, alias: str = "default"
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        warn_old_spellings(options)
        return super().parse_options(options, alias)

    @classmethod
    def from_url(cls, url: str, alias: str = "default", **options: Any) -> UserLockBackend:
        """``mysql://user:password@host:port/database?CONNECT_TIMEOUT=5&charset=utf8mb4``: query
        parameters are options (in any case) or mysqlclient keywords."""
        query = {k.upper() if k in OLD_SPELLINGS else k: v for k, v in parse_qsl(urlsplit(url).query)}
        return cls(alias=alias, location=url, options={**query, **options})

    # -- where to connect, and the namespace ------------------------------------------------
    def _params(self) -> dict[str, Any]:
        params = self._params_cache
        if params is None:
            if self._url_params is not None:
                base = dict(self._url_params)
            else:
                assert self.database_alias is not None
                base = mysql.params_from_django(self.database_alias)
            base.update(self._extra)
            params = self._params_cache = mysql.normalize(base)
        return params

    @property
    def where(self) -> str:
        params = self._params()
        if params.get("unix_socket"):
            return str(params["unix_socket"])
        return f"{params.get('host', 'localhost')}:{params.get('port', 3306)}"

    @property
    def database_name(self) -> str:
        """The database whose name namespaces the keys (the URL's path or the alias's NAME)."""
        return str(self._params().get("db") or "")

    @property
    def namespace(self) -> str:
        """What every key of this backend starts with: ``<database>.<KEY_PREFIX>``, or 16 hex
        digits of its SHA-256 and a dot when that is long, upper-case or has unsafe characters."""
        namespace = self._namespace_cache
        if namespace is None:
            database = self.database_name
            raw = (f"{database}." if database else "") + self.key_prefix
            if len(raw) <= NAMESPACE_MAX and raw == raw.lower() and all(c in SAFE_CHARS for c in raw):
                namespace = raw
            else:
                namespace = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:16] + "."
            self._namespace_cache = namespace
        return namespace

    def make_key(self, name: LockName) -> Key:
        """``<namespace><name>`` when that fits in 64 safe lower-case characters, else a readable
        stem and 128 bits of SHA-256 (see :mod:`locks.keys`)."""
        return make_key(name, self.key_spec, self.namespace)

    # -- sessions ---------------------------------------------------------------------------
    def _open(self) -> Session:
        session = Session.open(self._params(), self.where)
        self._sessions.add(session)
        if self.session_wait_timeout is not None:
            try:
                session.execute(f"SET SESSION wait_timeout = {int(self.session_wait_timeout)}")
            except BaseException:
                session.close()
                raise
        return session

    def _checkout(self) -> Session:
        try:
            return self._idle.pop()  # atomic: no lock on the hot path
        except IndexError:
            return self._open()

    def _checkin(self, session: Session) -> None:
        if session.broken or session.holds:
            return
        if len(self._idle) < self.max_idle:
            self._idle.append(session)
        else:
            session.close()

    def _forget(self, session: Session) -> None:
        thread = session.thread
        if thread is not None and self._threads.get(thread) is session:
            del self._threads[thread]
        session.thread = None

    def _discard(self, session: Session) -> None:
        session.close()
        self._forget(session)

    def _admin(self, sql: str, many: bool = False) -> Any:
        """One query on an idle session (not holding locks), retried once on a fresh connection
        when the pooled one turns out to be dead."""
        for attempt in (1, 2):
            session = self._checkout()
            try:
                result = session.rows(sql) if many else session.row(sql)
            except mysql.driver().Error as exc:
                session.close()
                if mysql.is_disconnect(exc):
                    if attempt == 1:
                        continue
                    raise BackendUnavailable(f"MySQL at {self.where} dropped the connection: {exc}") from exc
                raise
            except BaseException:
                session.close()
                raise
            self._checkin(session)
            return result
        raise AssertionError("unreachable")

    # -- acquire and release ----------------------------------------------------------------
    def try_acquire(self, request: LockRequest) -> Hold | None:
        return self._acquire(request, 0.0, True)

    def acquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        return self._acquire(request, timeout, True)

    def _server_wait(self, session: Session, deadline: float | None) -> str:
        """The timeout argument of the next ``GET_LOCK``."""
        limit = self.wait_slice
        fractional = session.mariadb and self.fractional_waits
        if deadline is None:
            return f"{limit:.6f}" if fractional else str(int(limit))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "0"
        if fractional:
            return f"{min(remaining, limit):.6f}"  # MariaDB waits fractions of a second
        # MySQL rounds the timeout to whole seconds: wait the whole seconds on the server (never
        # past the deadline), poll the rest.
        return str(min(int(remaining), int(limit)))

    def _acquire(self, request: LockRequest, timeout: float | None, share: bool) -> Hold | None:
        """Wait up to ``timeout`` on the server. ``share``: use (and become) the session holding
        the calling thread's other locks, so that the server can detect deadlocks."""
        key = request.key
        ident = get_ident() if share else 0
        session = self._threads.get(ident) if share else None
        if session is not None:
            if session.broken:
                self._forget(session)
                session = None
            elif key in session.holds:
                # Another task running on this thread holds the name through this session (a
                # blocking call inside asyncio): the server would grant it again. Wait apart.
                session, share = None, False
        pooled = session is None  # back to the pool unless it ends up holding this lock
        if session is None:
            try:
                session = self._idle.pop()  # _checkout, inlined: the hot path
            except IndexError:
                session = self._open()
        deadline = None if timeout is None else time.monotonic() + timeout
        reconnected = False
        while True:
            wait = self._forever if deadline is None and self._forever else self._server_wait(session, deadline)
            try:
                # The token is drawn only once the lock is granted (CASE evaluates lazily); both
                # branches unsigned, so the driver returns an int, not a Decimal.
                (value,) = session.row(
                    f"SELECT CASE GET_LOCK('{key}', {wait}) WHEN 1 THEN UUID_SHORT()"
                    " WHEN 0 THEN CAST(0 AS UNSIGNED) END"
                )
            except mysql.driver().Error as exc:
                code = mysql.error_code(exc)
                if code in mysql.DEADLOCK_ERRORS:
                    if pooled:
                        self._checkin(session)
                    raise LockDeadlock(
                        f"waiting for {request.name!r} would deadlock: this thread holds a lock that its "
                        "holder is waiting for (take locks in one order)",
                        request.name,
                    ) from exc
                if code == mysql.ER_QUERY_INTERRUPTED:
                    if pooled:
                        self._checkin(session)
                    raise LockError(
                        f"the wait for {request.name!r} was interrupted on the server", request.name
                    ) from exc
                self._discard(session)
                if code == mysql.ER_NOT_SUPPORTED_YET:
                    raise NotSupported(
                        f"this server refuses GET_LOCK ({exc}): Galera clusters do not support user locks",
                        request.name,
                    ) from exc
                if not mysql.is_disconnect(exc):
                    raise LockError(f"GET_LOCK for {request.name!r} failed: {exc}", request.name) from exc
                # The connection was dead (idle too long, killed, server restarted): its locks are
                # gone with it. Try once more on a new one; holds of the old one will raise LockLost.
                if reconnected:
                    raise BackendUnavailable(f"MySQL at {self.where} dropped the connection: {exc}") from exc
                reconnected, pooled = True, True
                session = self._open()
                continue
            except BaseException:
                # Interrupted mid-statement (KeyboardInterrupt...): the session's state is unknown.
                self._discard(session)
                raise
            if value is None:
                if pooled:
                    self._checkin(session)
                raise LockError(f"GET_LOCK for {request.name!r} returned NULL (interrupted or refused)", request.name)
            if value:
                session.holds.add(key)
                if share and session.thread is None:
                    session.thread = ident
                    self._threads[ident] = session
                return Hold(request, data=session, token=int(value))
            if deadline is None:
                if wait == "0":
                    time.sleep(MYSQL_POLL)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if pooled:
                    self._checkin(session)
                return None
            if wait == "0":
                time.sleep(min(remaining, MYSQL_POLL))

    def release(self, hold: Hold) -> None:
        session: Session = hold.data
        name = hold.name
        if session.broken:
            session.holds.discard(hold.key)
            self._forget(session)
            raise LockLost(f"the connection holding {name!r} was closed: the lock was lost", name)
        try:
            (value,) = session.row(f"SELECT RELEASE_LOCK('{hold.key}')")
        except mysql.driver().Error as exc:
            session.holds.discard(hold.key)
            self._discard(session)
            raise LockLost(f"the connection holding {name!r} is gone ({exc}): the lock was lost", name) from exc
        except BaseException:
            session.holds.discard(hold.key)
            self._discard(session)
            raise
        holds = session.holds
        holds.discard(hold.key)
        if not holds:  # back to the pool (inlined _forget and _checkin: the hot path)
            if session.thread is not None:
                self._forget(session)
            if len(self._idle) < self.max_idle:
                self._idle.append(session)
            else:
                session.close()
        if value != 1:
            who = "another connection holds it" if value == 0 else "nobody held it"
            raise LockLost(f"{name!r} was no longer held by this connection ({who})", name)

    def check(self, hold: Hold) -> bool:
        """Still held: the server says the lock's holder is this hold's connection."""
        session: Session = hold.data
        if session.broken:
            return False
        (holder,) = self._admin(f"SELECT IS_USED_LOCK('{hold.key}')")
        return bool(holder == session.id)

    def is_locked(self, key: Key) -> bool:
        (holder,) = self._admin(f"SELECT IS_USED_LOCK('{key}')")
        return holder is not None

    def is_held(self, name: LockName) -> bool:
        """Whether anyone holds ``name`` now (a snapshot), as django-mysql's ``Lock.is_held()``."""
        return self.holder_id(name) is not None

    def holder_id(self, name: LockName) -> int | None:
        """The connection id holding ``name`` (``IS_USED_LOCK``), or ``None`` when it is free."""
        key = self.make_key(self.validate_name(name))
        (holder,) = self._admin(f"SELECT IS_USED_LOCK('{key}')")
        return None if holder is None else int(holder)

    # -- async: a session of its own per hold (worker threads are shared by many tasks) -----
    def acquire_in_thread(self, request: LockRequest, timeout: float) -> Hold | None:
        # A worker thread serves many tasks: each wait gets a session of its own rather than
        # the thread's shared one.
        return self._acquire(request, timeout, False)

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for session in idle:
            session.close()

    def after_fork(self) -> None:
        # The child shares its parent's sockets: closing (or garbage-collecting) a connection
        # here would send COM_QUIT on it and end the parent's session, dropping its locks. Point
        # each inherited descriptor at /dev/null first; then closing only touches the child's copy.
        sessions = list(self._sessions)
        if sessions:
            devnull = os.open(os.devnull, os.O_RDWR)
            try:
                for session in sessions:
                    try:
                        os.dup2(devnull, session.conn.fileno())
                    except Exception:  # noqa: BLE001 - a connection already closed has no descriptor
                        _inherited.append(session)  # never collect what could not be detached
                        continue
                    session.close()
            finally:
                os.close(devnull)
        super().after_fork()
        self._idle = []
        self._threads = {}
        self._sessions = weakref.WeakSet()
