"""The ``LOCKS`` setting (shaped like ``CACHES``) and backends built from URLs.

```python
LOCKS = {
    "default": {"BACKEND": "locks_file.FileLockBackend", "LOCATION": "/var/lock/myproject"},
    "redis": {"BACKEND": "locks_cache.RedisLockBackend", "LOCATION": "redis://127.0.0.1:6379/0"},
}
```

Without a ``LOCKS`` setting (or outside a configured Django project), the ``default`` alias is the
backend that handles ``file://`` URLs (locks-file's, when it is installed), with its own default
location. Core names no backend package: it finds that backend through the ``locks.url_schemes``
entry points, as :func:`connect` does.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from locks.backends.base import BaseLockBackend

DEFAULT_ALIAS = "default"
#: Without a ``LOCKS`` setting, the default alias is the backend registered for this URL scheme.
DEFAULT_SCHEME = "file"
URL_SCHEMES_GROUP = "locks.url_schemes"
SETTING_KEYS = frozenset({"BACKEND", "LOCATION", "OPTIONS"})


def default_locks() -> dict[str, Any]:
    """The ``LOCKS`` of a project that sets none: the ``default`` alias on the backend registered
    for :data:`DEFAULT_SCHEME` URLs, at that backend's default ``LOCATION``.

    Raises:
        ImproperlyConfigured: no installed package handles those URLs, or its backend does not load.
    """
    try:
        cls = backend_class_for_scheme(DEFAULT_SCHEME)
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            f"No LOCKS setting, and no installed lock backend handles {DEFAULT_SCHEME}:// URLs to default to: "
            "set LOCKS, or `pip install locks-file` (OS file locks, no server). "
            "For one process only, LOCKS = {'default': {'BACKEND': 'locks.backends.memory.MemoryLockBackend'}}."
        ) from exc
    return {DEFAULT_ALIAS: {"BACKEND": f"{cls.__module__}.{cls.__qualname__}"}}


def configured_locks() -> dict[str, Any]:
    """The ``LOCKS`` setting, or :func:`default_locks` when there is none."""
    from django.conf import settings

    value = getattr(settings, "LOCKS", None) if settings.configured else None
    if value is None:
        return default_locks()
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(f"LOCKS must be a dict of aliases, not {type(value).__name__}")
    return dict(value)


def build_backend(alias: str, config: Mapping[str, Any]) -> BaseLockBackend:
    """Build the backend of one ``LOCKS`` entry, raising ImproperlyConfigured for bad settings."""
    if not isinstance(config, Mapping):
        raise ImproperlyConfigured(f"LOCKS[{alias!r}] must be a dict, not {type(config).__name__}")
    unknown = set(config) - SETTING_KEYS
    if unknown:
        raise ImproperlyConfigured(
            f"LOCKS[{alias!r}] has unknown keys {sorted(unknown)}; allowed: {sorted(SETTING_KEYS)}"
        )
    path = config.get("BACKEND")
    if not isinstance(path, str) or not path:
        raise ImproperlyConfigured(f"LOCKS[{alias!r}] needs a BACKEND (a dotted path to a backend class)")
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"LOCKS[{alias!r}]['BACKEND'] = {path!r} could not be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, BaseLockBackend)):
        raise ImproperlyConfigured(f"LOCKS[{alias!r}]['BACKEND'] = {path!r} is not a BaseLockBackend subclass")
    opts = config.get("OPTIONS", {})
    if not isinstance(opts, Mapping):
        raise ImproperlyConfigured(f"LOCKS[{alias!r}]['OPTIONS'] must be a dict")
    location = config.get("LOCATION")
    try:
        return cls(alias=alias, location=location, options=opts)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"LOCKS[{alias!r}]: {exc}") from exc


class LockBackendHandler:
    """``locks.lock_backends[alias]``: one backend instance per alias and process (backends are
    thread-safe and keep the reentrancy registry, so every thread must share one)."""

    def __init__(self) -> None:
        self._backends: dict[str, BaseLockBackend] = {}
        self._lock = threading.Lock()

    def __getitem__(self, alias: str) -> BaseLockBackend:
        backend = self._backends.get(alias)
        if backend is not None:
            return backend
        with self._lock:
            backend = self._backends.get(alias)
            if backend is None:
                config = configured_locks()
                if alias not in config:
                    raise ImproperlyConfigured(f"no lock backend {alias!r} in LOCKS (aliases: {sorted(config)})")
                backend = self._backends[alias] = build_backend(alias, config[alias])
            return backend

    def __iter__(self) -> Any:
        return iter(configured_locks())

    def all(self) -> list[BaseLockBackend]:
        return [self[alias] for alias in configured_locks()]

    def reset(self) -> None:
        """Forget built backends (settings changed). Holds already taken stay valid."""
        with self._lock:
            old, self._backends = self._backends, {}
        for backend in old.values():
            backend.close()


lock_backends = LockBackendHandler()


def get_backend(alias: str | None = None) -> BaseLockBackend:
    """The backend of a ``LOCKS`` alias (default: ``"default"``)."""
    return lock_backends[alias or DEFAULT_ALIAS]


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "LOCKS":
        lock_backends.reset()


setting_changed.connect(_settings_changed)


def backend_class_for_scheme(scheme: str) -> type[BaseLockBackend]:
    """The backend class that an installed package registers for a URL scheme."""
    found = [ep for ep in entry_points(group=URL_SCHEMES_GROUP) if ep.name == scheme]
    if not found:
        known = sorted({ep.name for ep in entry_points(group=URL_SCHEMES_GROUP)})
        raise ValueError(
            f"no installed lock backend handles {scheme!r} URLs (installed: {', '.join(known) or 'none'}); "
            "install the matching locks-* package"
        )
    try:
        cls = found[0].load()
    except (ImportError, AttributeError) as exc:
        raise ImproperlyConfigured(
            f"the lock backend for {scheme!r} URLs ({found[0].value}) could not be loaded: {exc}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, BaseLockBackend)):
        raise TypeError(f"entry point {found[0].value} is not a BaseLockBackend subclass")
    return cls


def connect(url: str, *, alias: str = "url", **options: Any) -> BaseLockBackend:
    """Build a backend from a URL, outside any Django settings.

    ``file:///var/lock/app``, ``postgresql://…``, ``mysql://…``, ``redis://…``, ``memcached://…``,
    ``memory://`` (in this process only): the scheme picks the installed backend; query parameters
    and ``options`` become its OPTIONS.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    scheme = urlsplit(url).scheme
    if not scheme:
        raise ValueError(f"{url!r} is not a URL: it needs a scheme such as file:// or redis://")
    return backend_class_for_scheme(scheme.lower()).from_url(url, alias=alias, **options)
