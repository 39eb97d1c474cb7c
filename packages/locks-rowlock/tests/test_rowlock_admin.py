"""The read-only admin of the lock table, its force-release action, and the cleanup command."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import pytest
from conftest import migrate
from django.core.management import call_command
from django.test import Client

from locks import LockLost
from locks_rowlock import RowLockBackend
from locks_rowlock.admin import lock_table_alias, lock_table_database
from locks_rowlock.rows import digest_of


@pytest.fixture(scope="module")
def admin_client() -> Client:
    from django.contrib.auth.models import User

    call_command("migrate", database="default", verbosity=0)
    username = f"admin-{uuid.uuid4().hex[:8]}"
    User.objects.create_superuser(username, f"{username}@example.com", "pw")
    client = Client()
    assert client.login(username=username, password="pw")
    return client


@pytest.fixture
def backend() -> Iterator[RowLockBackend]:
    migrate("pg")
    backend = RowLockBackend("admin-test", options={"DATABASE": "pg"})
    yield backend
    backend.close()


def test_admin_reads_the_lock_table_of_the_configured_alias() -> None:
    assert lock_table_alias() == "default"
    assert lock_table_database() == "pg"


def test_admin_lists_locks_read_only_and_force_releases(admin_client: Client, backend: RowLockBackend) -> None:
    name = f"admin-{uuid.uuid4().hex[:12]}"
    handle = backend.lock(name, ttl=60)
    handle.acquire(timeout=0)
    url = "/admin/locks_rowlock/rowlock/"
    page = admin_client.get(url, {"q": name})
    assert page.status_code == 200
    assert name in page.content.decode()
    assert admin_client.get(url + "add/").status_code == 403
    digest = digest_of(backend.make_key(name))
    response = admin_client.post(url + "?q=" + name, {"action": "force_release", "_selected_action": [digest]})
    assert response.status_code == 302
    assert not backend.lock(name).locked()
    with pytest.raises(LockLost):
        handle.release()


def test_cleanup_command_deletes_only_old_free_rows(backend: RowLockBackend) -> None:
    name = f"cleanup-{uuid.uuid4().hex[:12]}"
    with backend.lock(name):
        pass
    out = io.StringIO()
    call_command("rowlock_cleanup", "--older-than", "3600", stdout=out)
    assert "stale lock row(s) deleted" in out.getvalue()
    # a fresh row stays
    assert backend._fetch("SELECT 1 FROM locks_rowlock_lock WHERE digest = %s", (digest_of(backend.make_key(name)),))
