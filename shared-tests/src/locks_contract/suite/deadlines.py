"""Bounded waits end on time: never before their deadline, and at most ``deadline_margin`` after.

A single late wait says little on a loaded machine, so each API makes :attr:`deadline_waits` waits
on a lock another client holds, and the lateness is judged at p99: with 50 waits, only the worst
one may be later than the margin. None may end early, and every one must report ``False``. The
p50/p99 lateness is printed (``pytest -s``) and kept in the test's ``user_properties`` (in the
``--junitxml`` report with ``junit_family=legacy``).

The waits run with the test process's heap frozen (:func:`gc.freeze`): after thousands of earlier
tests, one full collection of that heap takes longer than the margin, and it would land inside a
wait by chance. What the backend allocates during the waits is still collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator

import pytest

from locks.backends.base import BaseLockBackend
from locks_contract.base import ContractBase


def percentile(values: Iterable[float], fraction: float) -> float:
    """The value that all but the top ``1 - fraction`` share of ``values`` do not exceed, that
    share rounded up: with 50 values, p99 lets the worst one out (it is the second worst), p50
    is the median's upper neighbour."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    above = math.ceil(len(ordered) * (1 - fraction) - 1e-9)
    return ordered[max(0, len(ordered) - 1 - above)]


@contextlib.contextmanager
def heap_frozen() -> Iterator[None]:
    """The objects alive now are left out of cyclic collections inside the block."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def lateness_report(timeouts: list[float], elapsed: list[float]) -> str:
    late = [spent - wait for wait, spent in zip(timeouts, elapsed)]
    worst = max(range(len(late)), key=late.__getitem__)
    return (
        f"lateness over {len(late)} waits: p50 {percentile(late, 0.5) * 1000:.2f} ms, "
        f"p99 {percentile(late, 0.99) * 1000:.2f} ms, worst {late[worst] * 1000:.2f} ms "
        f"(a {timeouts[worst]}s wait)"
    )


class AbstractDeadlineTests(ContractBase):
    #: How late a bounded wait may return after its deadline (seconds), judged at p99: the
    #: guarantee the documentation gives for every backend.
    deadline_margin: float = 0.010
    #: The timeouts of the waits, used in turn (seconds).
    deadline_timeouts: tuple[float, ...] = (0.01, 0.02, 0.05)
    #: How many waits each API makes.
    deadline_waits: int = 50
    #: The share of waits that must end within the margin.
    deadline_quantile: float = 0.99

    def _timeouts(self) -> list[float]:
        return list(itertools.islice(itertools.cycle(self.deadline_timeouts), self.deadline_waits))

    def _judge(
        self,
        api: str,
        timeouts: list[float],
        elapsed: list[float],
        results: list[bool],
        properties: list[tuple[str, object]],
    ) -> None:
        report = f"{api}: {lateness_report(timeouts, elapsed)}"
        print(f"\n[deadlines] {type(self).__name__} {report}")
        late_ms = [(spent - wait) * 1000 for wait, spent in zip(timeouts, elapsed)]
        properties.append((f"{api}_lateness_p50_ms", round(percentile(late_ms, 0.5), 3)))
        properties.append((f"{api}_lateness_p99_ms", round(percentile(late_ms, 0.99), 3)))
        assert not any(results), f"{api}: a wait on a held lock returned True"
        early = [(wait, spent) for wait, spent in zip(timeouts, elapsed) if spent < wait]
        assert not early, f"{api}: waits ended before their deadline (timeout, elapsed): {early[:5]}"
        late = percentile((spent - wait for wait, spent in zip(timeouts, elapsed)), self.deadline_quantile)
        assert late <= self.deadline_margin, (
            f"{api}: bounded waits end more than {self.deadline_margin * 1000:g} ms after their deadline "
            f"at p{self.deadline_quantile * 100:g}; {report}"
        )

    @pytest.mark.parametrize("api", ["sync", "asyncio"])
    def test_bounded_waits_end_on_time(
        self,
        backend: BaseLockBackend,
        other_backend: BaseLockBackend,
        lock_name: str,
        request: pytest.FixtureRequest,
        api: str,
    ) -> None:
        timeouts = self._timeouts()
        with other_backend.lock(lock_name, timeout=5), heap_frozen():
            if api == "sync":
                assert backend.lock(lock_name).acquire(timeout=0) is False  # connected, warm
                waits = [_timed(backend.lock(lock_name).acquire, timeout) for timeout in timeouts]
            else:
                waits = asyncio.run(_async_waits(backend, lock_name, timeouts))
        elapsed = [spent for spent, _ in waits]
        results = [acquired for _, acquired in waits]
        self._judge(api, timeouts, elapsed, results, request.node.user_properties)


def _timed(acquire: Callable[..., bool], timeout: float) -> tuple[float, bool]:
    """How long ``acquire(timeout=timeout)`` took, and what it returned."""
    started = time.monotonic()
    acquired = acquire(timeout=timeout)
    return time.monotonic() - started, acquired


async def _async_waits(backend: BaseLockBackend, name: str, timeouts: list[float]) -> list[tuple[float, bool]]:
    """:func:`_timed` for ``alock(name).acquire``, one fresh handle per wait, in one task."""
    assert await backend.alock(name).acquire(timeout=0) is False  # connected, warm
    waits = []
    for timeout in timeouts:
        handle = backend.alock(name)
        started = time.monotonic()
        acquired = await handle.acquire(timeout=timeout)
        waits.append((time.monotonic() - started, acquired))
    return waits
