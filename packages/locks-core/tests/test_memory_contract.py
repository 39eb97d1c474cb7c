"""The whole contract on the in-process backend, ``memory://``.

Its cases that take the lock in another process are skipped, saying so: a table lives in one
process (``MemoryLockBackend.cross_process`` is false).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from locks_contract import BackendSpec, ContractTests
from locks_contract.connections import open_descriptors

MEMORY = "locks.backends.memory.MemoryLockBackend"


class TestMemoryContract(ContractTests):
    @pytest.fixture
    def backend_spec(self) -> BackendSpec:
        return BackendSpec(MEMORY, location=f"memory://contract-{uuid.uuid4().hex[:12]}")

    @pytest.fixture
    def unreachable_backend_spec(self) -> BackendSpec:
        # no server can go away: a stand-in whose every primitive raises BackendUnavailable
        return BackendSpec("memory_backend.UnreachableMemoryBackend", location="memory://unreachable")

    @pytest.fixture
    def server_connection_count(self) -> Callable[[], int]:
        # no server: the process's descriptors stand for its connections (there should be none)
        return open_descriptors
