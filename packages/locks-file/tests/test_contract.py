"""locks-file keeps the whole contract."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from locks.backends import BaseLockBackend
from locks_contract import BackendSpec, ContractTests
from locks_contract.connections import open_descriptors


class TestFileLockContract(ContractTests):
    @pytest.fixture
    def backend_spec(self, tmp_path: Path) -> BackendSpec:
        return BackendSpec("locks_file.FileLockBackend", location=str(tmp_path / "locks"))

    @pytest.fixture
    def unreachable_backend_spec(self, tmp_path: Path) -> BackendSpec:
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("")
        return BackendSpec("locks_file.FileLockBackend", location=str(blocker / "locks"))

    @pytest.fixture
    def server_connection_count(self) -> Callable[[], int]:
        # No server: a lock file left open is a descriptor of this process.
        return open_descriptors

    def take_lock_away(self, backend: BaseLockBackend, name: str) -> None:
        # No force_release: the lock is lost when its file is deleted under the holder.
        os.unlink(backend.path_of(backend.make_key(backend.validate_name(name))))  # type: ignore[attr-defined]
