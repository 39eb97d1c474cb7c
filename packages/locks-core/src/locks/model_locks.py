"""``locks.lock_model``: a lock named after a model instance."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from locks.handle import _UNSET, Lock


def model_lock_name(instance: Any, *fields: str) -> str:
    """``"<app_label>.<model>:pk=<pk>"``, or the given fields' values instead of the pk
    (``lock_model(order, "customer_id")`` → ``"shop.order:customer_id=7"``)."""
    meta = getattr(instance, "_meta", None)
    if meta is None:
        raise TypeError(f"lock_model() takes a model instance, not {type(instance).__name__}")
    names = fields or ("pk",)
    parts = []
    for field in names:
        if not isinstance(field, str):
            raise TypeError(f"field names must be str, not {type(field).__name__}")
        value = getattr(instance, field)
        if value is None:
            raise ValueError(f"{meta.label}.{field} is None: save the instance (or set the field) before locking on it")
        parts.append(f"{field}={value}")
    return f"{meta.label_lower}:{','.join(parts)}"


class ModelLock(Lock):
    """A :class:`~locks.handle.Lock` on a model instance that can refresh it once acquired."""

    def __init__(self, instance: Any, *fields: str, refresh: bool = False, **options: Any) -> None:
        super().__init__(model_lock_name(instance, *fields), **options)
        self.instance = instance
        self.refresh = refresh

    def acquire(self, timeout: float | timedelta | None = _UNSET, *, blocking: bool = True) -> bool:
        acquired = super().acquire(timeout, blocking=blocking)
        if acquired and self.refresh:
            # What another holder saved before we got the lock must be what we work on.
            self.instance.refresh_from_db()
        return acquired


def lock_model(instance: Any, *fields: str, refresh: bool = False, **options: Any) -> ModelLock:
    """A lock on a model instance, named by its model and primary key (or ``fields``).

    Args:
        instance: a saved model instance.
        fields: field names whose values name the lock instead of the primary key.
        refresh: reload the instance from the database once the lock is acquired.
        options: the options of :func:`locks.lock` (``using``, ``timeout``, ``ttl``...).
    """
    return ModelLock(instance, *fields, refresh=refresh, **options)
