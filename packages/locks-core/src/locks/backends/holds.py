"""What core and a backend hand each other: the request for a lock (:class:`LockRequest`, with its
:class:`Owner`), the server-side acquisition it gets back (:class:`Hold`), and a row of a listing
(:class:`HolderInfo`)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from locks.keys import Key, LockName

__all__ = ["Hold", "HolderInfo", "LockRequest", "Owner"]

_HOST = socket.gethostname()


@dataclass(frozen=True)
class Owner:
    """Who asks for a lock: shown in listings, stored by backends that keep holder details."""

    host: str
    pid: int
    thread: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def current(cls) -> Owner:
        task = None
        try:
            task = asyncio.current_task()
        except RuntimeError:
            pass
        where = task.get_name() if task is not None else threading.current_thread().name
        return cls(host=_HOST, pid=os.getpid(), thread=where)

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.thread}"


class LockRequest:
    """One acquisition that the core asks a backend for (plain slots: it is on the hot path)."""

    __slots__ = ("key", "name", "owner", "shared", "ttl")

    def __init__(self, name: LockName, key: Key, shared: bool, ttl: float | None, owner: Owner) -> None:
        self.name = name
        self.key = key
        self.shared = shared
        self.ttl = ttl
        self.owner = owner

    def __repr__(self) -> str:
        return f"LockRequest({self.name!r}, key={self.key!r}, shared={self.shared}, ttl={self.ttl}, owner={self.owner})"


class Hold:
    """One server-side acquisition: what ``release``/``extend``/``check`` act on.

    ``data`` is the backend's own (a file descriptor, a connection, a random token); ``token`` is
    the fencing token where the backend has them.
    """

    __slots__ = ("acquired_at", "data", "request", "token")

    def __init__(self, request: LockRequest, data: Any = None, token: int | None = None) -> None:
        self.request = request
        self.data = data
        self.token = token
        self.acquired_at = time.monotonic()

    @property
    def key(self) -> Key:
        return self.request.key

    @property
    def name(self) -> LockName:
        return self.request.name

    def __repr__(self) -> str:
        return f"Hold({self.request.name!r}, token={self.token})"


@dataclass(frozen=True)
class HolderInfo:
    """One held lock as ``holders()`` lists it. Unknown fields are ``None``."""

    key: Key
    name: str | None = None
    shared: bool = False
    owner: str | None = None
    pid: int | None = None
    host: str | None = None
    since: float | None = None  # Unix time
    expires_at: float | None = None  # Unix time, leases only
    token: int | None = None
    waiting: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
