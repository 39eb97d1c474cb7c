"""What ``locks bench`` measures: the backend under test and its peers.

Peers (other libraries on the same server, and the server's bare floor) come from the packages
that know them, through the ``locks.bench_peers`` entry-point group: each entry is a callable
taking the backend under test and returning the :class:`~locks.backends.BenchSubject` objects it
offers for it (none for a backend that is not its kind). No backend module imports its bench
module, and core names no backend.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from importlib.metadata import entry_points
from typing import Any

from locks.backends.base import BaseLockBackend
from locks.backends.spec import BackendSpec, BenchSubject

#: The entry-point group of peer providers.
PEERS_GROUP = "locks.bench_peers"

logger = logging.getLogger("locks.bench")


class KeptLocks:
    """A bench peer (``acquire(name)``, ``release(name)``) over lock objects that are built once
    per name by :meth:`new`, kept, and acquired and released again and again."""

    def __init__(self) -> None:
        self.locks: dict[str, Any] = {}

    def new(self, name: str) -> Any:
        """The lock object for ``name``, with ``acquire()`` and ``release()``."""
        raise NotImplementedError

    def acquire(self, name: str) -> None:
        lock = self.locks.get(name)
        if lock is None:
            lock = self.locks[name] = self.new(name)
        lock.acquire()

    def release(self, name: str) -> None:
        self.locks[name].release()

    def close(self) -> None:
        pass


class EnteredLocks:
    """A bench peer over context managers: :meth:`new` builds one for each acquisition, it is
    entered to acquire and exited to release."""

    def __init__(self) -> None:
        self.held: dict[str, Any] = {}

    def new(self, name: str) -> Any:
        """A fresh context manager that holds ``name`` while entered."""
        raise NotImplementedError

    def acquire(self, name: str) -> None:
        context = self.new(name)
        context.__enter__()
        self.held[name] = context

    def release(self, name: str) -> None:
        self.held.pop(name).__exit__(None, None, None)

    def close(self) -> None:
        pass


class BackendLocks(KeptLocks):
    """Adapts a locks backend to the bench protocol (``acquire(name)``, ``release(name)``): one
    handle per name, reused, as an application holding a ``locks.lock(...)`` object does."""

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__()
        spec.run_setup()
        self.backend = spec.build(alias="bench")

    def new(self, name: str) -> Any:
        return self.backend.lock(name)

    def close(self) -> None:
        self.backend.close()


def backend_subject(label: str, spec: BackendSpec) -> BenchSubject:
    """A :class:`BenchSubject` for any locks backend configuration (another option set of the
    backend under test, say), measured like the backend itself."""
    return BenchSubject(label, "locks.bench.BackendLocks", {"spec": spec})


def setup_django() -> None:
    """Worker set-up for backends built from Django settings (``--using``)."""
    import django
    from django.conf import settings

    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        settings.configure()
    django.setup()


def configure_django(**settings_kwargs: Any) -> None:
    """Configures Django with these settings and sets it up, unless settings are configured
    already (peers built on Django models or caches call it in their worker)."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(**settings_kwargs)
        django.setup()


def close_django_connections() -> None:
    """Closes every Django database connection of this worker."""
    from django.db import connections

    connections.close_all()


def subjects_for(backend: BaseLockBackend, label: str | None = None, peers: bool = True) -> list[BenchSubject]:
    """The backend itself, then (with ``peers``) what the ``locks.bench_peers`` providers offer."""
    spec = backend.spec()
    if spec.setup is None and os.environ.get("DJANGO_SETTINGS_MODULE"):
        spec = dataclasses.replace(spec, setup="locks.bench.setup_django")
    own = backend_subject(label or f"locks ({type(backend).__name__})", spec)
    return [own, *(peers_of(backend) if peers else [])]


def peers_of(backend: BaseLockBackend) -> list[BenchSubject]:
    """Every peer the installed providers offer for ``backend``; a provider that fails is
    skipped with a warning (a peer library that is missing or broken must not end the run)."""
    found: list[BenchSubject] = []
    for entry in sorted(entry_points(group=PEERS_GROUP), key=lambda e: e.name):
        try:
            provider: Any = entry.load()
            found.extend(provider(backend))
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            logger.warning("bench peers %s failed: %s: %s", entry.name, type(exc).__name__, exc)
    return found
