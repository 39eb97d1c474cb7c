"""Django system checks for the ``LOCKS`` setting (``manage.py check``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from locks.config import DEFAULT_ALIAS, build_backend, configured_locks


@checks.register("locks")
def check_lock_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """locks.E001 LOCKS is not a dict or cannot be used; locks.E002 no default alias;
    locks.E003 an alias's settings are wrong (BACKEND, OPTIONS, unknown keys)."""
    try:
        config = configured_locks()
    except ImproperlyConfigured as exc:
        return [
            checks.Error(
                str(exc), hint="Set LOCKS like CACHES: aliases mapping to BACKEND/LOCATION/OPTIONS.", id="locks.E001"
            )
        ]
    errors: list[checks.CheckMessage] = []
    if DEFAULT_ALIAS not in config:
        errors.append(checks.Error("LOCKS has no 'default' alias.", hint="Add LOCKS['default'].", id="locks.E002"))
    for alias, entry in config.items():
        if not isinstance(entry, Mapping):
            errors.append(checks.Error(f"LOCKS[{alias!r}] must be a dict.", id="locks.E003"))
            continue
        try:
            build_backend(alias, entry)
        except ImproperlyConfigured as exc:
            errors.append(checks.Error(str(exc), id="locks.E003"))
    return errors
