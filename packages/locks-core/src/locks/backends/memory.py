"""Locks in this process's memory: the reference backend (``memory://``).

Every backend object with the same ``LOCATION`` name shares one table per process (``memory://``
is the default table, ``memory://name`` another), so threads, asyncio tasks and several backend
objects exclude each other as the clients of a server do. Other processes never see a table, and
a forked child starts with empty ones: use it for tests, docs, demos and work that stays in one
process, never to exclude gunicorn or Celery workers from each other.

It is also the example to read before writing a backend: each primitive is a few lines over a
dict, under one lock per table. A key maps to its grants (one exclusive grant or any number of
shared ones); a grant is what :attr:`Hold.data <locks.backends.Hold.data>` points at, and holding
*that object* is what owning the lock means, so a release after a lease ran out or after
``force_release`` can never free someone else's grant. Waiters sleep on a condition of their key,
notified by every release (``notify``); a lease is judged by :func:`time.monotonic`, so a waiter
blocked by a lease also wakes when it runs out.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from locks.backends.base import (
    DEFAULT_LEASE,
    FENCING,
    FORCE_RELEASE,
    LISTING,
    NOTIFY,
    SHARED,
    TTL,
    WATCHDOG,
    BaseLockBackend,
    Hold,
    HolderInfo,
    LockRequest,
    Owner,
)
from locks.backends.options import Option, Seconds
from locks.exceptions import LockLost
from locks.forking import BACKENDS, on_fork_in_child
from locks.keys import Key, LockName

__all__ = ["MemoryLockBackend", "table_name"]

SCHEME = "memory"
_EXPIRED = "its lease ran out"
_FORCED = "it was force-released"


class _Grant:
    """One acquisition recorded in a table (the ``data`` of its :class:`Hold`)."""

    __slots__ = ("ended", "expires", "name", "owner", "shared", "since", "token")

    def __init__(self, request: LockRequest, token: int, expires: float | None) -> None:
        self.name = request.name
        self.owner: Owner = request.owner
        self.shared = request.shared
        self.token = token
        self.expires = expires  # time.monotonic() deadline; None: held until released
        self.since = time.time()
        self.ended: str | None = None  # why it ended, once something other than its holder ended it

    def alive(self, now: float) -> bool:
        return self.ended is None and (self.expires is None or self.expires > now)


class _Waiters:
    """The condition that waiters of one key sleep on, and how many there are."""

    __slots__ = ("cond", "count")

    def __init__(self, lock: threading.Lock) -> None:
        self.cond = threading.Condition(lock)
        self.count = 0


class _Table:
    """The locks of one ``LOCATION`` name in this process. Every attribute is guarded by ``lock``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.reset()

    def reset(self) -> None:
        self.lock = threading.Lock()
        self.grants: dict[Key, list[_Grant]] = {}
        self.waiters: dict[Key, _Waiters] = {}
        # One counter for every name of the table: each name's tokens grow with each acquisition,
        # and a free name leaves nothing behind (a counter per name would keep every name ever used).
        self.tokens = itertools.count(1)

    def live(self, key: Key, now: float) -> list[_Grant]:
        """The key's grants that still hold, forgetting those whose lease ran out."""
        grants = self.grants.get(key)
        if not grants:
            return []
        alive = [grant for grant in grants if grant.alive(now)]
        if len(alive) < len(grants):
            for grant in grants:
                if grant.ended is None and not grant.alive(now):
                    grant.ended = _EXPIRED
            if alive:
                self.grants[key] = alive
            else:
                del self.grants[key]
        return alive

    def remove(self, key: Key, grant: _Grant) -> bool:
        """Take ``grant`` out of the table and wake the key's waiters; whether it was there."""
        grants = self.grants.get(key, [])
        if not any(other is grant for other in grants):
            return False
        grants.remove(grant)
        if not grants:
            del self.grants[key]
        self.notify(key)
        return True

    def notify(self, key: Key) -> None:
        waiters = self.waiters.get(key)
        if waiters is not None:
            waiters.cond.notify_all()


_tables: dict[str, _Table] = {}
_tables_lock = threading.Lock()


def table_name(location: str | None) -> str:
    """The table a ``LOCATION`` names: ``memory://name`` or just ``name``. ``None``, ``""`` and
    ``memory://`` name the default table, ``""``."""
    if location is None:
        return ""
    if not isinstance(location, str):
        raise ImproperlyConfigured(f"the memory backend's LOCATION must be a str, not {type(location).__name__}")
    if location.lower().startswith(SCHEME + ":"):
        parts = urlsplit(location)
        return unquote(parts.netloc + parts.path).strip("/")
    return location


def _table_named(name: str) -> _Table:
    table = _tables.get(name)
    if table is None:
        with _tables_lock:
            table = _tables.setdefault(name, _Table(name))
    return table


@on_fork_in_child(BACKENDS)
def _empty_tables_after_fork() -> None:
    # A forked child holds none of its parent's locks, and a lock that a parent's thread held at
    # the fork would stay locked forever in the child: every table starts again, in place (the
    # backend objects the child inherited keep pointing at them).
    global _tables_lock
    _tables_lock = threading.Lock()
    for table in list(_tables.values()):
        table.reset()


class MemoryLockBackend(BaseLockBackend):
    """Locks in this process's memory, shared by every backend object with the same table name.

    ``LOCATION``: the table's name (``memory://name``, or ``name``; default: the default table).
    ``OPTIONS``: ``DEFAULT_TTL``, the lease of a lock that gives no ``ttl`` (default 10 s, renewed
    in the background while held), besides ``KEY_PREFIX`` and ``WATCHDOG``. In a URL, query
    parameters are options: ``memory://tests?default_ttl=2``.

    Thread-safe; its locks exclude threads and tasks of this process only (see
    :attr:`cross_process`).
    """

    #: What it can do, each checked by the contract suite:
    #:
    #: * ``ttl``: a lock may be a lease, judged by :func:`time.monotonic`; ``extend`` renews it;
    #: * ``shared``: readers together, a writer alone;
    #: * ``fencing``: every grant takes the table's next token;
    #: * ``listing``: ``holders()`` reads the table;
    #: * ``force_release``: the grants of a name are dropped, and their holders learn it;
    #: * ``notify``: a release wakes the waiters of its key at once (no polling);
    #: * ``watchdog``: ``check()`` tells whether a grant still holds, without waiting.
    OPTIONS: ClassVar[tuple[Option, ...]] = (
        Option(
            "DEFAULT_TTL",
            Seconds,
            DEFAULT_LEASE,
            "the lease of a lock that gives no `ttl`, renewed in the background while held",
            minimum=0.001,
        ),
    )
    capabilities: ClassVar[frozenset[str]] = frozenset({TTL, SHARED, FENCING, LISTING, FORCE_RELEASE, NOTIFY, WATCHDOG})
    #: Its locks live in this process: another process (spawned, or a forked child) has its own
    #: tables. The contract skips its cross-process cases for such a backend, saying so.
    cross_process: ClassVar[bool] = False
    #: A lease is checked by the clock alone: the keeper may look often.
    watchdog_interval: ClassVar[float] = 0.5

    def __init__(
        self, alias: str = "default", location: str | None = None, options: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(alias, location, options)
        self.default_ttl = self.settings["DEFAULT_TTL"]
        self.table_name = table_name(location)
        self._table = _table_named(self.table_name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} alias={self.alias!r} table={self.table_name!r}>"

    # -- acquiring ---------------------------------------------------------------------------
    def _grant(self, table: _Table, request: LockRequest, now: float) -> Hold | None:
        """Record a grant when the lock is free for this request (the table's lock is held)."""
        grants = table.live(request.key, now)
        if grants and not (request.shared and all(grant.shared for grant in grants)):
            return None
        expires = None if request.ttl is None else now + request.ttl
        grant = _Grant(request, next(table.tokens), expires)
        table.grants.setdefault(request.key, []).append(grant)
        return Hold(request, data=grant, token=grant.token)

    def try_acquire(self, request: LockRequest) -> Hold | None:
        table = self._table
        with table.lock:
            return self._grant(table, request, time.monotonic())

    def acquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        """Wait on the key's condition: woken by a release, or when a blocking lease runs out."""
        table, key = self._table, request.key
        deadline = None if timeout is None else time.monotonic() + timeout
        with table.lock:
            now = time.monotonic()
            hold = self._grant(table, request, now)
            if hold is not None or (deadline is not None and now >= deadline):
                return hold
            waiters = table.waiters.get(key)
            if waiters is None:
                waiters = table.waiters[key] = _Waiters(table.lock)
            waiters.count += 1
            try:
                while True:
                    pause = self._until_a_lease_ends(table, key, now)
                    if deadline is not None:
                        pause = deadline - now if pause is None else min(pause, deadline - now)
                    waiters.cond.wait(pause)
                    now = time.monotonic()
                    hold = self._grant(table, request, now)
                    if hold is not None or (deadline is not None and now >= deadline):
                        return hold
            finally:
                waiters.count -= 1
                if not waiters.count and table.waiters.get(key) is waiters:
                    del table.waiters[key]

    @staticmethod
    def _until_a_lease_ends(table: _Table, key: Key, now: float) -> float | None:
        # Nobody notifies when a lease runs out: wake up then and look again.
        ends = [grant.expires for grant in table.grants.get(key, []) if grant.expires is not None]
        return max(0.0, min(ends) - now) if ends else None

    # -- holding -----------------------------------------------------------------------------
    def _ended(self, table: _Table, hold: Hold, now: float) -> str | None:
        """Why ``hold`` no longer holds, or ``None`` while it does (the table's lock is held)."""
        grant: _Grant = hold.data
        if grant.ended is None and not grant.alive(now):
            grant.ended = _EXPIRED
        if grant.ended is None and not any(other is grant for other in table.grants.get(hold.key, [])):
            grant.ended = "it is not in the table"  # a forked child's inherited hold, say
        return grant.ended

    def release(self, hold: Hold) -> None:
        table = self._table
        with table.lock:
            reason = self._ended(table, hold, time.monotonic())
            table.remove(hold.key, hold.data)  # an expired grant leaves the table as well
        if reason is not None:
            raise LockLost(f"{hold.name!r} was no longer held: {reason}", hold.name)

    def extend(self, hold: Hold, ttl: float) -> None:
        table = self._table
        with table.lock:
            now = time.monotonic()
            reason = self._ended(table, hold, now)
            if reason is None:
                hold.data.expires = now + ttl
                return
            table.remove(hold.key, hold.data)
        raise LockLost(f"{hold.name!r} could not be extended: {reason}", hold.name)

    def check(self, hold: Hold) -> bool:
        table = self._table
        with table.lock:
            return self._ended(table, hold, time.monotonic()) is None

    # -- looking and administering -----------------------------------------------------------
    def is_locked(self, key: Key) -> bool:
        table = self._table
        with table.lock:
            return bool(table.live(key, time.monotonic()))

    def holders(self, prefix: str | None = None) -> list[HolderInfo]:
        table = self._table
        found = []
        with table.lock:
            now, wall = time.monotonic(), time.time()
            for key in list(table.grants):
                waiters = table.waiters.get(key)
                for grant in table.live(key, now):
                    name = str(grant.name)
                    if prefix is not None and not name.startswith(prefix):
                        continue
                    found.append(
                        HolderInfo(
                            key=key,
                            name=name,
                            shared=grant.shared,
                            owner=str(grant.owner),
                            pid=grant.owner.pid,
                            host=grant.owner.host,
                            since=grant.since,
                            expires_at=None if grant.expires is None else wall + grant.expires - now,
                            token=grant.token,
                            waiting=waiters.count if waiters is not None else 0,
                            extra={"owner_id": grant.owner.id, "thread": grant.owner.thread, "table": table.name},
                        )
                    )
        found.sort(key=lambda info: (str(info.name), str(info.key), info.token or 0))
        return found

    def force_release(self, name: LockName) -> int:
        key = self.make_key(self.validate_name(name))
        table = self._table
        with table.lock:
            broken = list(table.live(key, time.monotonic()))  # a copy: removing changes the table's list
            for grant in broken:
                grant.ended = _FORCED
                table.remove(key, grant)
        return len(broken)
