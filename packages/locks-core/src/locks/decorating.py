"""``@locks.lock(...)`` as a decorator: a fresh handle per call, so concurrent calls never share
state; the name may be a template over the call's arguments or a callable of them."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from locks.naming import NameBuilder

if TYPE_CHECKING:
    from locks.handle import Lock

F = TypeVar("F", bound=Callable[..., Any])


def decorate(lock: Lock, target: F) -> F:
    """Wrap ``target`` (a function, a coroutine function, or a class with ``handle()``) so that
    each call runs under a fresh handle with ``lock``'s options."""
    if isinstance(target, type):
        return _decorate_class(lock, target)  # type: ignore[return-value]
    if not callable(target):
        raise TypeError(f"a lock decorates a function or a management command class, not {type(target).__name__}")
    names = NameBuilder(lock._name_spec, target)
    if inspect.iscoroutinefunction(target):
        return _decorate_coroutine(lock, target, names)  # type: ignore[return-value]

    @functools.wraps(target)
    def locked_call(*args: Any, **kwargs: Any) -> Any:
        with lock._derive(names(args, kwargs)) as held:
            if not held:
                return None
            return target(*args, **kwargs)

    return locked_call  # type: ignore[return-value]


def _decorate_coroutine(lock: Lock, target: Callable[..., Any], names: NameBuilder) -> Callable[..., Any]:
    from locks.aio import AsyncLock

    opts = lock._options()

    @functools.wraps(target)
    async def locked_call(*args: Any, **kwargs: Any) -> Any:
        handle = AsyncLock(names(args, kwargs), using=lock.using, backend=lock._backend, **opts)
        async with handle as held:
            if not held:
                return None
            return await target(*args, **kwargs)

    return locked_call


def _decorate_class(lock: Lock, cls: type) -> type:
    """A management command class: its ``handle()`` runs under the lock (named after the class
    unless the lock has a name)."""
    handle = getattr(cls, "handle", None)
    if handle is None or not callable(handle):
        raise TypeError(
            f"{cls.__qualname__} has no handle() method: only management commands can be decorated as classes"
        )
    spec = lock._name_spec
    if spec is None:
        spec = f"{cls.__module__}.{cls.__qualname__}"
    named = type(lock)(None, using=lock.using, backend=lock._backend, **lock._options())
    named._name_spec = spec  # a template or callable is resolved per call, from handle()'s arguments
    cls.handle = decorate(named, handle)  # type: ignore[attr-defined]
    return cls
