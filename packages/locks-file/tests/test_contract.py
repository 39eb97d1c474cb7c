"""locks-file keeps the whole contract."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

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
