"""The server going away, and backends that lock through a Django database connection."""

from __future__ import annotations

import time

import pytest

from locks import BackendUnavailable
from locks.backends.base import BaseLockBackend
from locks.backends.spec import BackendSpec
from locks_contract.base import ContractBase
from locks_contract.suite.basic import _held_elsewhere


class AbstractUnavailableTests(ContractBase):
    #: The longest an unreachable server may take to be reported (the connect timeout).
    unavailable_within: float = 15.0

    def test_unreachable_server_raises_backend_unavailable_not_a_hang(
        self, unreachable_backend_spec: BackendSpec
    ) -> None:
        backend = unreachable_backend_spec.build()
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            backend.lock("contract-unreachable").acquire(timeout=1)
        assert time.monotonic() - started < self.unavailable_within
        with pytest.raises(BackendUnavailable), backend.lock("contract-unreachable", timeout=0):
            pytest.fail("entered a lock on an unreachable server")


class AbstractDjangoConnectionTests(ContractBase):
    """Backends that lock through a Django database: the caller's transaction and Django's
    connection handling must neither hide nor drop a lock."""

    def test_lock_taken_in_a_transaction_is_visible_at_once_and_survives_rollback(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str, django_database_alias: str
    ) -> None:
        from django.db import transaction

        handle = backend.lock(lock_name, timeout=5)

        class Rollback(Exception):
            pass

        with pytest.raises(Rollback), transaction.atomic(using=django_database_alias):
            handle.acquire()
            assert _held_elsewhere(other_backend, lock_name)
            raise Rollback
        assert _held_elsewhere(other_backend, lock_name), "the caller's rollback dropped the lock"
        handle.release()
        assert not _held_elsewhere(other_backend, lock_name)

    def test_django_closing_its_connection_does_not_drop_a_held_lock(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str, django_database_alias: str
    ) -> None:
        from django.db import close_old_connections, connections

        with backend.lock(lock_name, timeout=5):
            connections[django_database_alias].close()
            close_old_connections()
            assert _held_elsewhere(other_backend, lock_name), "closing Django's connection dropped the lock"
        assert not _held_elsewhere(other_backend, lock_name)
