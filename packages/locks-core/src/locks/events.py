"""One place that reports what happens to a lock: Django signals and the ``locks`` logger."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from locks import signals

if TYPE_CHECKING:
    from locks.backends.base import BaseLockBackend

logger = logging.getLogger("locks")


def acquired(backend: BaseLockBackend, name: Any, waited: float, token: int | None, shared: bool) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("acquired %r on %s after %.6fs (token %s)", name, backend.alias, waited, token)
    if signals.lock_acquired.receivers:
        signals.lock_acquired.send(
            type(backend), name=name, alias=backend.alias, backend=backend, waited=waited, token=token, shared=shared
        )


def released(backend: BaseLockBackend, name: Any, acquired_at: float) -> None:
    if not (signals.lock_released.receivers or logger.isEnabledFor(logging.DEBUG)):
        return
    held = time.monotonic() - acquired_at
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("released %r on %s after holding it %.6fs", name, backend.alias, held)
    if signals.lock_released.receivers:
        signals.lock_released.send(type(backend), name=name, alias=backend.alias, backend=backend, held=held)


def timed_out(backend: BaseLockBackend, name: Any, waited: float, timeout: float | None) -> None:
    logger.info("timed out on %r on %s after %.3fs", name, backend.alias, waited)
    if signals.lock_timed_out.receivers:
        signals.lock_timed_out.send(
            type(backend), name=name, alias=backend.alias, backend=backend, waited=waited, timeout=timeout
        )


def lost(backend: BaseLockBackend, name: Any, held: float, reason: str) -> None:
    logger.warning("lost %r on %s after holding it %.3fs: %s", name, backend.alias, held, reason)
    if signals.lock_lost.receivers:
        signals.lock_lost.send(type(backend), name=name, alias=backend.alias, backend=backend, held=held, reason=reason)
