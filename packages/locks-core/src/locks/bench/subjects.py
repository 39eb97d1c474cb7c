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


class BackendLocks:
    """Adapts a locks backend to the bench protocol (``acquire(name)``, ``release(name)``): one
    handle per name, reused, as an application holding a ``locks.lock(...)`` object does."""

    def __init__(self, spec: BackendSpec) -> None:
        spec.run_setup()
        self.backend = spec.build(alias="bench")
        self.handles: dict[str, Any] = {}

    def acquire(self, name: str) -> None:
        handle = self.handles.get(name)
        if handle is None:
            handle = self.handles[name] = self.backend.lock(name)
        handle.acquire()

    def release(self, name: str) -> None:
        self.handles[name].release()

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
