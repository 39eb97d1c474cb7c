"""When a bounded wait must end: one clock and one rule for every waiting loop.

A wait for a lock with a timeout returns no earlier than its deadline and, on every backend, within
:data:`MARGIN` of it (the contract suite measures it). The rule every loop follows to keep that:

* pauses are cut to what remains (:meth:`Deadline.cap`), so the last one ends at the deadline;
* after it comes one last attempt, then the wait gives up (:meth:`Deadline.expired`).

Server-side waits (``lock_timeout``, ``GET_LOCK``, ``BLPOP``) are given what remains; where the
server's own timer is coarse (Redis checks blocking timeouts at its ``hz``, MySQL rounds
``GET_LOCK`` to whole seconds) the backend bounds the wait on its side as well.

The clock is :func:`time.monotonic`, in threads and on the event loop alike, so a deadline can be
handed from the loop to a worker thread.
"""

from __future__ import annotations

import time

__all__ = ["MARGIN", "Deadline"]

#: How late a bounded wait may end after its deadline (seconds), at the 99th percentile: the
#: guarantee the documentation gives and the contract checks.
MARGIN = 0.010


class Deadline:
    """The end of a wait of ``timeout`` seconds from now (``None``: no end).

    A polling loop tries, gives up once :meth:`expired`, and otherwise sleeps with :meth:`sleep`
    (or waits :meth:`cap` seconds for a notification): never past the deadline, so that the try
    after the last pause is made at the deadline.
    """

    __slots__ = ("at",)

    def __init__(self, timeout: float | None) -> None:
        #: The deadline on the :func:`time.monotonic` clock, ``None`` for a wait without end.
        self.at: float | None = None if timeout is None else time.monotonic() + timeout

    @classmethod
    def at_time(cls, at: float | None) -> Deadline:
        """A deadline at ``at`` on the :func:`time.monotonic` clock."""
        deadline = cls(None)
        deadline.at = at
        return deadline

    @property
    def bounded(self) -> bool:
        return self.at is not None

    def remaining(self) -> float | None:
        """Seconds left (never negative), ``None`` when the wait has no end."""
        if self.at is None:
            return None
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        """Whether the deadline has come: the wait makes no attempt after the current one."""
        return self.at is not None and time.monotonic() >= self.at

    def cap(self, pause: float) -> float:
        """``pause``, cut so that it ends at the deadline at the latest."""
        if self.at is None:
            return pause
        return max(0.0, min(pause, self.at - time.monotonic()))

    def sleep(self, pause: float) -> None:
        """Sleep ``pause`` seconds, or until the deadline if that comes first."""
        pause = self.cap(pause)
        if pause > 0:
            time.sleep(pause)

    def __repr__(self) -> str:
        left = self.remaining()
        return "Deadline(None)" if left is None else f"Deadline({left:.6f}s left)"
