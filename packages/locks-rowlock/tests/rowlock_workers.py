"""Code run in spawned processes by locks-rowlock's tests (importable by the spawn start method)."""

from __future__ import annotations

import time
from typing import Any


def skew_clock(offset: float) -> None:
    """Make this process's clock wrong by ``offset`` seconds (time.time and datetime.now alike)."""
    import datetime as datetime_module

    real_time, real_time_ns = time.time, time.time_ns
    time.time = lambda: real_time() + offset  # type: ignore[assignment]
    time.time_ns = lambda: real_time_ns() + int(offset * 1e9)  # type: ignore[assignment]

    class SkewedDatetime(datetime_module.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:  # type: ignore[override]
            return datetime_module.datetime.fromtimestamp(time.time(), tz)

        @classmethod
        def utcnow(cls) -> Any:  # type: ignore[override]
            return datetime_module.datetime.fromtimestamp(time.time(), datetime_module.timezone.utc).replace(
                tzinfo=None
            )

    datetime_module.datetime = SkewedDatetime  # type: ignore[misc]


def skewed_attempt(options: dict[str, Any], name: str, offset: float, ttl: float, hold_for: float) -> dict[str, Any]:
    """With a clock ``offset`` seconds off, try the lock once; hold it ``hold_for`` seconds if taken."""
    import rowlock_test_settings

    skew_clock(offset)
    rowlock_test_settings.setup()
    from locks_rowlock import RowLockBackend

    backend = RowLockBackend("skewed", options=options)
    try:
        handle = backend.lock(name, ttl=ttl)
        got = handle.acquire(timeout=0)
        result = {"got": got, "clock": time.time()}
        if got:
            time.sleep(hold_for)
            try:
                handle.release()
                result["released"] = True
            except Exception as exc:
                result["released"] = type(exc).__name__
        return result
    finally:
        backend.close()
