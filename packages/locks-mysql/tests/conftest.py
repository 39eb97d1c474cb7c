"""Django settings for locks-mysql's tests: MariaDB/MySQL from ``LOCKS_MYSQL_URL``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from locks_mysql._testing import mysql_url, setup_from_environment

setup_from_environment()


def _connect() -> Any:
    import MySQLdb

    from locks_mysql.connection import normalize, params_from_url

    return MySQLdb.connect(**normalize(params_from_url(mysql_url())))


def sessions_of_this_process(url: str) -> int:
    """The server's sessions whose client is this process (``information_schema.PROCESSLIST``,
    matched by client port: other test runs share the server)."""
    from locks_contract.connections import client_ports, processlist_clients
    from locks_mysql.connection import params_from_url

    ports = client_ports(int(params_from_url(url).get("port", 3306)))
    conn = _connect()
    try:
        return processlist_clients(conn, ports)
    finally:
        conn.close()


@pytest.fixture(scope="session")
def server() -> Iterator[Any]:
    """A connection of the test session's own (for inspecting and killing), or a failure
    (LOCKS_REQUIRE_SERVERS=1) / skip when the server does not answer."""
    import MySQLdb

    from locks_contract import server_unreachable

    try:
        conn = _connect()
    except MySQLdb.Error as exc:
        server_unreachable(f"MySQL at {mysql_url()}: {exc}")
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture(scope="session", autouse=True)
def _metadata_lock_info(request: pytest.FixtureRequest) -> None:
    """MariaDB lists user locks through the metadata_lock_info plugin: load it when missing
    (what the documentation tells administrators to do). MySQL has performance_schema."""
    import MySQLdb

    try:
        conn = _connect()
    except MySQLdb.Error:
        return  # the tests that need the server report it
    try:
        if "mariadb" not in conn.get_server_info().lower():
            return
        cursor = conn.cursor()
        cursor.execute(
            "SELECT PLUGIN_STATUS FROM information_schema.ALL_PLUGINS WHERE PLUGIN_NAME = 'METADATA_LOCK_INFO'"
        )
        row = cursor.fetchone()
        if row is not None and row[0] != "ACTIVE":
            try:
                cursor.execute("INSTALL SONAME 'metadata_lock_info'")
            except MySQLdb.Error as exc:
                if exc.args[0] != 1968:  # already installed by a concurrent run
                    raise
    finally:
        conn.close()


@pytest.fixture
def unique() -> str:
    return f"mysql-{uuid.uuid4().hex[:12]}"
