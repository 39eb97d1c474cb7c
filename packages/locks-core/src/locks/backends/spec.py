"""Recipes that rebuild a backend in another thread or process (contract suite, bench, CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from locks.backends.base import BaseLockBackend


@dataclass(frozen=True)
class BackendSpec:
    """A picklable recipe for a backend, so every thread, process and test gets its own client.

    Attributes:
        backend: dotted path of the backend class (``"locks_file.FileLockBackend"``).
        location: its ``LOCATION``.
        options: its ``OPTIONS``.
        setup: dotted path of a function called once in each worker process before building
            (for example one that configures Django settings and calls ``django.setup()``).
    """

    backend: str
    location: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    setup: str | None = None

    def build(self, alias: str = "contract") -> BaseLockBackend:
        """A new backend instance with its own connections."""
        cls = import_string(self.backend)
        return cls(alias=alias, location=self.location, options=dict(self.options))  # type: ignore[no-any-return]

    def run_setup(self) -> None:
        if self.setup:
            import_string(self.setup)()


@dataclass(frozen=True)
class BenchSubject:
    """A lock implementation that ``locks bench`` measures, built again in each worker process.

    Attributes:
        label: what the report calls it (``"django-pglock"``, ``"raw flock"``).
        factory: dotted path of a callable (``"pkg.module.Class"`` or ``"pkg.module:Class"``), called
            in the worker with ``kwargs``; it returns an
            object with ``acquire(name)`` (blocks until held), ``release(name)`` and, optionally,
            ``close()``.
        kwargs: picklable keyword arguments for ``factory``.
        floor: the bare minimum any lock on that server must do (raw driver calls): the bench's
            ratios are taken against it.
    """

    label: str
    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    floor: bool = False

    def open(self) -> Any:
        return import_string(self.factory.replace(":", "."))(**self.kwargs)
