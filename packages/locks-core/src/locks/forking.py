"""What a forked child must forget, done by one fork handler in a fixed order.

A child inherits its parent's memory, not its parent's locks: the holds stay the parent's, and
the parent's keeper thread does not exist in the child. After ``fork()`` the child, in order:

1. learns its own pid (owners and holds compare it);
2. gets a new keeper, with nothing to renew or check;
3. asks every backend to forget its holds and any connection it shares with the parent
   (:meth:`BaseLockBackend.after_fork <locks.backends.BaseLockBackend.after_fork>`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

#: The steps, by their place in the order above.
PID, KEEPER, BACKENDS = 1, 2, 3

_steps: list[tuple[int, Callable[[], None]]] = []


def on_fork_in_child(order: int) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """Register the decorated function to run in a forked child, at its place ``order``
    (:data:`PID`, :data:`KEEPER`, :data:`BACKENDS`), whatever the import order."""

    def register(step: Callable[[], None]) -> Callable[[], None]:
        _steps.append((order, step))
        _steps.sort(key=lambda item: item[0])
        return step

    return register


def _after_fork_in_child() -> None:
    for _, step in _steps:
        step()


os.register_at_fork(after_in_child=_after_fork_in_child)
