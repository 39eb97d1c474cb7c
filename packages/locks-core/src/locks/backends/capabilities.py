"""What a backend can do: each capability a name, declared in
:attr:`BaseLockBackend.capabilities <locks.backends.BaseLockBackend.capabilities>` and checked
by the contract suite. Asking a backend for one it lacks raises
:class:`~locks.exceptions.NotSupported`."""

from __future__ import annotations

__all__ = [
    "ASYNC_NATIVE",
    "CAPABILITIES",
    "FENCING",
    "FORCE_RELEASE",
    "LISTING",
    "NOTIFY",
    "SESSION_BOUND",
    "SHARED",
    "TTL",
    "WATCHDOG",
]

#: Leases that expire unless renewed: ``ttl``, ``extend()``, ``auto_renew``.
TTL = "ttl"
#: Shared (read) locks: ``shared=True``.
SHARED = "shared"
#: Fencing tokens: ``lock.token`` grows with every acquisition of a name.
FENCING = "fencing"
#: ``backend.holders()`` and ``locks list``.
LISTING = "listing"
#: ``backend.force_release(name)`` and ``locks release`` on a lock a live holder has.
FORCE_RELEASE = "force_release"
#: Released by the server at once when the holder's process or connection dies.
SESSION_BOUND = "session_bound"
#: A blocked waiter is woken by the release instead of polling.
NOTIFY = "notify"
#: ``check()`` can tell that a held lock was lost (the keeper's watchdog uses it).
WATCHDOG = "watchdog"
#: The async API runs on the event loop without threads.
ASYNC_NATIVE = "async_native"

CAPABILITIES: dict[str, str] = {
    TTL: "leases that expire unless renewed (ttl, extend, auto_renew)",
    SHARED: "shared (read) locks",
    FENCING: "fencing tokens that grow with each acquisition",
    LISTING: "listing held locks",
    FORCE_RELEASE: "force-releasing a lock that a live holder has",
    SESSION_BOUND: "released at once when the holder dies",
    NOTIFY: "waiters woken by the release, no polling",
    WATCHDOG: "detecting a lost lock while it is held",
    ASYNC_NATIVE: "asyncio without threads",
}
