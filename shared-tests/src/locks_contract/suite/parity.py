"""Sync and asyncio handles agree: each scenario is written once and played on both APIs.

A scenario is a coroutine that drives handles through a small facade (:class:`Api`); played with
``locks.lock`` handles the calls run directly, played with ``locks.alock`` handles they are
awaited. Every step records what a caller can observe: the return value or the exception's class,
then ``owned``, ``lost`` and whether a fencing token is there. The two records must be equal, so
a state change written for one API and forgotten in the other (``lost`` after a failed
``extend``, say) shows up on every backend.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from locks.backends.base import FENCING, SHARED, TTL, BaseLockBackend
from locks_contract.base import ContractBase, requires

Observation = tuple[str, object, bool, bool, bool | None]


class Handle:
    """One lock handle, sync or async, behind awaitable methods."""

    def __init__(self, handle: Any, is_async: bool) -> None:
        self.handle = handle
        self.is_async = is_async

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.handle, method)(*args, **kwargs)
        return await result if self.is_async else result

    async def acquire(self, **kwargs: Any) -> Any:
        return await self._call("acquire", **kwargs)

    async def release(self) -> Any:
        return await self._call("release")

    async def extend(self, ttl: float | None = None) -> Any:
        return await self._call("extend", ttl)

    async def locked(self) -> Any:
        return await self._call("locked")


class Api:
    """Builds handles of one kind and records what each step shows."""

    def __init__(self, backend: BaseLockBackend, is_async: bool) -> None:
        self.backend = backend
        self.is_async = is_async
        self.record: list[Observation] = []

    def lock(self, name: str, **options: Any) -> Handle:
        build = self.backend.alock if self.is_async else self.backend.lock
        return Handle(build(name, **options), self.is_async)

    async def step(self, label: str, handle: Handle, call: Callable[[], Awaitable[Any]]) -> object:
        try:
            outcome: object = await call()
        except Exception as exc:  # noqa: BLE001 - the exception's class is the observation
            outcome = type(exc).__name__
        token = handle.handle.token is not None if FENCING in self.backend.capabilities else None
        self.record.append((label, outcome, handle.handle.owned, handle.handle.lost, token))
        return outcome


Scenario = Callable[[Api, BaseLockBackend, str, float], Coroutine[Any, Any, None]]


async def acquire_release_twice(api: Api, other: BaseLockBackend, name: str, lease: float) -> None:
    handle = api.lock(name, timeout=5)
    await api.step("release before acquire", handle, handle.release)
    await api.step("acquire", handle, handle.acquire)
    await api.step("locked", handle, handle.locked)
    await api.step("release", handle, handle.release)
    await api.step("release again", handle, handle.release)
    await api.step("locked after", handle, handle.locked)


async def busy_try_once_and_bounded_wait(api: Api, other: BaseLockBackend, name: str, lease: float) -> None:
    holder = other.lock(name, timeout=5)
    holder.acquire()
    try:
        handle = api.lock(name)
        await api.step("try once", handle, lambda: handle.acquire(timeout=0))
        await api.step("bounded wait", handle, lambda: handle.acquire(timeout=0.2))
        await api.step("not blocking", handle, lambda: handle.acquire(blocking=False))
        await api.step("release unheld", handle, handle.release)
    finally:
        holder.release()
    await api.step("free now", handle, lambda: handle.acquire(timeout=5))
    await api.step("release", handle, handle.release)


async def nesting(api: Api, other: BaseLockBackend, name: str, lease: float) -> None:
    outer = api.lock(name, timeout=5)
    inner = api.lock(name, timeout=0)
    await api.step("outer", outer, outer.acquire)
    await api.step("inner", inner, inner.acquire)
    await api.step("outer again", outer, outer.acquire)
    await api.step("outer release", outer, outer.release)
    await api.step("inner release", inner, inner.release)
    await api.step("inner release again", inner, inner.release)
    await api.step("outer last release", outer, outer.release)


async def extend_a_hold(api: Api, other: BaseLockBackend, name: str, lease: float) -> None:
    handle = api.lock(name, timeout=5, ttl=lease * 5 if TTL in api.backend.capabilities else None)
    await api.step("extend unheld", handle, lambda: handle.extend(lease * 5))
    await api.step("acquire", handle, handle.acquire)
    await api.step("extend", handle, lambda: handle.extend(lease * 5))
    await api.step("release", handle, handle.release)


async def lease_lost_then_extend(api: Api, other: BaseLockBackend, name: str, lease: float) -> None:
    handle = api.lock(name, timeout=5, ttl=lease, auto_renew=False)
    await api.step("acquire", handle, handle.acquire)
    await asyncio.sleep(lease * 1.5)
    taker = other.lock(name, timeout=10)
    taker.acquire()  # the lease ran out: another holder has it now
    try:
        await api.step("extend after expiry", handle, lambda: handle.extend(lease))
        await api.step("extend again", handle, lambda: handle.extend(lease))
        await api.step("release", handle, handle.release)
    finally:
        taker.release()


async def shared_holders(api: Api, other: BaseLockBackend, name: str, lease: float) -> None:
    first = api.lock(name, shared=True, timeout=5)
    second = api.lock(name, shared=True, timeout=5)
    exclusive = api.lock(name, timeout=0)
    await api.step("first reader", first, first.acquire)
    await api.step("upgrade refused", exclusive, exclusive.acquire)
    reader = other.lock(name, shared=True, timeout=5)
    reader.acquire()
    try:
        await api.step("second reader", second, second.acquire)
        await api.step("second release", second, second.release)
    finally:
        reader.release()
    await api.step("first release", first, first.release)


#: Each scenario, with the capabilities it needs (none: every backend plays it).
SCENARIOS: dict[str, tuple[Scenario, tuple[str, ...]]] = {
    "acquire_release_twice": (acquire_release_twice, ()),
    "busy_try_once_and_bounded_wait": (busy_try_once_and_bounded_wait, ()),
    "nesting": (nesting, ()),
    "extend_a_hold": (extend_a_hold, ()),
    "lease_lost_then_extend": (lease_lost_then_extend, (TTL,)),
    "shared_holders": (shared_holders, (SHARED,)),
}


def _scenario_params() -> list[Any]:
    return [
        pytest.param(name, id=name, marks=[requires(*needs)] if needs else [])
        for name, (_, needs) in sorted(SCENARIOS.items())
    ]


class AbstractParityTests(ContractBase):
    @pytest.mark.parametrize("scenario", _scenario_params())
    def test_sync_and_async_handles_agree(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str, scenario: str
    ) -> None:
        play, _ = SCENARIOS[scenario]

        def run(is_async: bool, name: str) -> list[Observation]:
            api = Api(backend, is_async)
            started = time.monotonic()
            asyncio.run(play(api, other_backend, name, self.lease_ttl))
            assert time.monotonic() - started < 60
            return api.record

        sync = run(False, f"{lock_name}-sync")
        aio = run(True, f"{lock_name}-async")
        assert sync, "the scenario observed nothing"
        assert aio == sync, "\n".join(f"{'  ' if a == s else '!!'} {s} | {a}" for s, a in zip(sync, aio, strict=False))
